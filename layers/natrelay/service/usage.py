"""Limits and usage per key: admit a request against its key's limits (one
conditional write, only for keys with limits) and record what it used when it ends
(one write)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from natrelay.batching import Batch
from natrelay.errors import BudgetExceededError, RateLimitError
from natrelay.service.access import Principal
from natrelay.service.context import Context
from natrelay.service.metering import Request, counted, text_bytes
from natrelay.service.row_stats import RowStats, Sample
from natrelay.store import ConditionFailedError, TaskRecord, UsageRecord
from natrelay.store.usage import KEEP_SECONDS

log = logging.getLogger("natrelay.service")


@dataclass(frozen=True)
class Admission:
    """A request let in: the day its usage is counted on, its concurrency slot, and the
    tokens of its key's budget reserved for it."""

    day: str
    slot: str | None = None
    reserved: int = 0


def day_and_minute(now: float) -> tuple[str, str]:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H%M")


def _seconds_to_midnight(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - moment).total_seconds()) + 1)


@dataclass(frozen=True)
class Used:
    """What one request of a key without limits used, to be added up with others."""

    key_id: str
    day: str
    prompt: int
    completion: int
    error: bool
    # A request the key's limits refused (it used nothing and is not among `requests`).
    refused: bool = False


class Usage:
    def __init__(self, ctx: Context, rows: RowStats, *, batching: bool) -> None:
        self.usage = ctx.stores.usage
        self.clock = ctx.clock
        # Each request is counted on its row's hour too.
        self.rows = rows
        # `batching` (server mode: one long-lived process): the usage of keys without
        # limits is added up and written together (nothing reads it to admit).
        self.batching = batching
        self._used: Batch[Used] = Batch(
            "requests' usage", ctx.settings.record_batch_seconds, self._write_used
        )

    async def admit(
        self, principal: Principal, task_id: str, deadline: float, reserve: int = 0
    ) -> Admission:
        """Let a request in, or raise RateLimitError / BudgetExceededError. A key with a
        token budget reserves `reserve` tokens of it (service.metering's estimate) until
        the request's usage is recorded."""
        now = self.clock()
        day, minute = day_and_minute(now)
        if not principal.limited:
            return Admission(day)
        slot = f"{task_id}@{int(deadline)}" if principal.concurrency is not None else None
        reserve = reserve if principal.tokens_per_day is not None else 0
        for attempt in range(2):
            try:
                await self.usage.admit(
                    principal.key_id,
                    day,
                    minute,
                    slot=slot,
                    rpm=principal.rpm,
                    concurrency=principal.concurrency,
                    tokens_per_day=principal.tokens_per_day,
                    expires_at=now + KEEP_SECONDS,
                    reserve=reserve,
                )
                return Admission(day, slot, reserve)
            except ConditionFailedError as exc:
                seen = exc.record if isinstance(exc.record, UsageRecord) else None
                if seen is None:
                    raise RateLimitError("over this key's limits", retry_after=1) from exc
                stale = {s for s in seen.inflight if _deadline(s) < now}
                if attempt == 0 and stale and _only_concurrency(principal, seen, minute):
                    await self.usage.free_slots(principal.key_id, day, stale)
                    continue
                await self._count_refused(principal.key_id, day)
                raise _refusal(principal, seen, minute, now) from exc
        raise AssertionError("unreachable")

    async def _count_refused(self, key_id: str, day: str) -> None:
        """Count a refused request on the key's day: added up with the others' usage
        (long-lived mode), or written at once."""
        refused = Used(key_id, day, 0, 0, error=False, refused=True)
        if self.batching:
            self._used.add(refused)
        else:
            await self._write_used([refused])

    async def release(self, principal: Principal, admission: Admission) -> None:
        """Give back the concurrency slot and the reserved tokens of a request that did
        not run after all."""
        if admission.slot is not None or admission.reserved:
            slots = {admission.slot} if admission.slot is not None else set()
            await self.usage.free_slots(
                principal.key_id, admission.day, slots, reserved=admission.reserved
            )

    async def record(
        self, task: TaskRecord, *, body: Any = None, error: bool = False, later: bool = False
    ) -> None:
        """Record what a task of a client used, once it has ended; frees its slot.
        `later`: the key has no limits, so its usage may be added up with others' and
        written within record_batch_seconds (server mode)."""
        if task.client_key is None:
            return
        # what its publisher reported, bounded by what the request allows; or estimated
        # from what was relayed (service.metering)
        request = Request.of(task.request, task.request_size)
        tokens = counted(body, request, task.relayed + text_bytes(body), trusted=False)
        if later and self.batching and task.slot is None and not task.reserved:
            prompt, completion = tokens
            day = task.usage_day or day_and_minute(self.clock())[0]
            self._used.add(Used(task.client_key, day, prompt, completion, error))
            await self.rows.ended(task, error=error, tokens=tokens)
            return
        await asyncio.gather(  # two writes, side by side: neither ever raises
            self._record(
                task.client_key,
                task.usage_day,
                task.slot,
                tokens,
                reserved=task.reserved,
                error=error,
                what=f"task {task.id}",
            ),
            self.rows.ended(task, error=error, tokens=tokens),
        )

    async def record_call(
        self,
        principal: Principal,
        admission: Admission,
        llm: str,
        *,
        body: Any,
        error: bool,
        request: Request | None = None,
        relayed: int = 0,
    ) -> None:
        """Record a call the relay made itself (a public row's upstream): its usage as
        the upstream reported it, else estimated from `request` and the `relayed` bytes
        of text; frees its slot and reservation."""
        tokens = counted(body, request or Request(0), relayed, trusted=True)
        await asyncio.gather(
            self._record(
                principal.key_id,
                admission.day,
                admission.slot,
                tokens,
                reserved=admission.reserved,
                error=error,
                what=f"a call of {llm}",
            ),
            self.rows.count(Sample(llm, error, *tokens)),
        )

    async def _record(
        self,
        key_id: str,
        day: str | None,
        slot: str | None,
        tokens: tuple[int, int],
        *,
        reserved: int,
        error: bool,
        what: str,
    ) -> None:
        prompt, completion = tokens
        now = self.clock()
        try:
            await self.usage.record(
                key_id,
                day or day_and_minute(now)[0],
                slot=slot,
                prompt_tokens=prompt,
                completion_tokens=completion,
                errors=int(error),
                expires_at=now + KEEP_SECONDS,
                reserved=reserved,
            )
        except Exception:  # usage is bookkeeping: never fail the request over it
            log.exception("usage of %s not recorded", what)

    async def _write_used(self, entries: list[Used]) -> None:
        """One write per key and day for the usage gathered."""
        added: dict[tuple[str, str], list[int]] = {}
        for u in entries:
            counts = added.setdefault((u.key_id, u.day), [0, 0, 0, 0, 0])
            counts[0] += int(not u.refused)
            counts[1] += u.prompt
            counts[2] += u.completion
            counts[3] += int(u.error)
            counts[4] += int(u.refused)
        expires_at = self.clock() + KEEP_SECONDS
        for (key_id, day), (requests, prompt, completion, errors, refused) in added.items():
            try:
                await self.usage.record(
                    key_id,
                    day,
                    slot=None,
                    requests=requests,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    errors=errors,
                    refused=refused,
                    expires_at=expires_at,
                )
            except Exception:  # bookkeeping, as above
                log.exception("usage of %d requests of a key not recorded", requests)

    async def drain(self) -> None:
        """Write everything gathered (the process is stopping)."""
        await asyncio.gather(self.rows.drain(), self._used.drain())

    async def days(self, key_id: str, days: int) -> list[UsageRecord]:
        """The key's usage for the last `days` UTC days (today included), oldest first."""
        since = datetime.fromtimestamp(self.clock(), UTC) - timedelta(days=days - 1)
        return await self.usage.days(key_id, since.strftime("%Y-%m-%d"))


def _deadline(slot: str) -> float:
    try:
        return float(slot.rpartition("@")[2])
    except ValueError:
        return 0.0


def _over_rate(principal: Principal, seen: UsageRecord, minute: str) -> bool:
    return principal.rpm is not None and seen.minutes.get(minute, 0) >= principal.rpm


def _over_budget(principal: Principal, seen: UsageRecord) -> bool:
    budget = principal.tokens_per_day
    return budget is not None and seen.prompt_tokens + seen.completion_tokens >= budget


def _budget_reserved(principal: Principal, seen: UsageRecord) -> bool:
    """What is left of the budget is reserved by requests in flight (it frees up as they
    end)."""
    budget = principal.tokens_per_day
    return budget is not None and seen.tokens >= budget


def _only_concurrency(principal: Principal, seen: UsageRecord, minute: str) -> bool:
    return not (
        _over_rate(principal, seen, minute)
        or _over_budget(principal, seen)
        or _budget_reserved(principal, seen)
    )


def _refusal(principal: Principal, seen: UsageRecord, minute: str, now: float) -> RateLimitError:
    if _over_budget(principal, seen):
        return BudgetExceededError(
            f"this key's budget of {principal.tokens_per_day} tokens per day is used up; "
            "it renews at 00:00 UTC",
            retry_after=_seconds_to_midnight(now),
        )
    if _budget_reserved(principal, seen):
        return RateLimitError(
            f"the rest of this key's budget of {principal.tokens_per_day} tokens per day is "
            "reserved by its requests in flight; try again when one has finished",
            retry_after=1,
        )
    if _over_rate(principal, seen, minute):
        return RateLimitError(
            f"this key may send {principal.rpm} requests per minute; try again in the next minute",
            retry_after=max(1, 60 - int(now) % 60),
        )
    return RateLimitError(
        f"this key may have {principal.concurrency} requests in flight at once; try again "
        "when one has finished",
        retry_after=1,
    )
