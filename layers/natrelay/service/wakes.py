"""Waking a hibernating backend: one wake per pool at a time, across every instance.

A wake targets one member of the pool (a live, hibernating one with a wake recipe);
the requests queued meanwhile run on it once it answers, or on any member that
serves sooner.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import anyio

from natrelay.errors import LlmNotFoundError, PublisherOfflineError
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.endings import PoolHint
from natrelay.service.ids import new_task_id
from natrelay.service.outcomes import offline
from natrelay.service.sessions import Sessions
from natrelay.store import ConditionFailedError, LlmRecord, MemberRecord, NewTask, TaskRecord
from natrelay.wire import LlmStatus, TaskKind, trace

log = logging.getLogger("natrelay.service")

_CLAIM_TRIES = 3


@dataclass(frozen=True)
class Wake:
    """A wake in flight: its task's id and the member (session) it wakes."""

    id: str
    target: str | None


class Wakes:
    def __init__(self, ctx: Context, sessions: Sessions, doorbell: Doorbell) -> None:
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.metrics = ctx.metrics
        self.liveness = ctx.liveness
        self.sessions = sessions
        self.doorbell = doorbell

    def window(self, member: MemberRecord | None) -> float:
        """How long a wake of the member may take: its recipe's wait plus a margin."""
        s = self.settings
        wait = member.wake_max_wait if member is not None else None
        return (wait or s.default_wake_seconds) + s.wake_margin_seconds

    def wakeable(self, row: LlmRecord) -> list[MemberRecord]:
        """Live members that sleep and can be woken."""
        now = self.clock()
        return [
            m
            for m in row.live_members(now, self.liveness.timeout)
            if m.status is LlmStatus.HIBERNATING and m.wake_max_wait is not None
        ]

    async def ensure(self, row: LlmRecord, *, more: bool = False) -> Wake | None:
        """Wake a member of the pool (one wake per pool at a time, across instances) or
        join the wake in flight. Without `more`, only when no live member is active
        (None: one is); with it, to add one to busy members (None: none can wake).
        PublisherOfflineError when the pool needs a wake that no member can give."""
        for _ in range(_CLAIM_TRIES):
            now = self.clock()
            if row.waking(now):
                return Wake(row.wake_id or "", row.wake_target)
            status = row.pool_status(now, self.liveness.timeout)
            candidates = self.wakeable(row)
            if status is LlmStatus.ACTIVE and not more:
                return None
            if not candidates:
                if more:
                    return None
                raise offline(row, now, status)
            target = random.choice(candidates)  # noqa: S311 - spreading, not secrecy
            wake_id = new_task_id(now)
            window = self.window(target)
            try:
                await self.stores.llms.claim_wake(
                    row.name, wake_id, target.session_id, now + window, now
                )
            except ConditionFailedError as exc:
                if not isinstance(exc.record, LlmRecord):
                    raise LlmNotFoundError(
                        f"the model {row.name!r} does not exist", param="model"
                    ) from exc
                row = exc.record  # another wake won (join it), or the target left
                continue
            await self._put(row, wake_id, target.session_id, now, window)
            return Wake(wake_id, target.session_id)
        raise PublisherOfflineError(
            f"could not start a wake of {row.name}; try again", retry_after=1, retryable=True
        )

    async def _put(
        self, row: LlmRecord, wake_id: str, target: str, now: float, window: float
    ) -> None:
        name = row.name
        try:
            await self.tasks.put(
                NewTask(
                    id=wake_id,
                    kind=TaskKind.WAKE,
                    llm=name,
                    target_session=target,
                    created_at=now,
                    expires_at=now + window + self.settings.result_retention_seconds,
                    lease_seconds=window,
                    # the trace of the request that started the wake (wire.trace)
                    traceparent=trace.current.get(),
                )
            )
        except BaseException:
            # A marker with no wake task behind it would hold every request of the pool
            # until its deadline: take it back.
            with anyio.CancelScope(shield=True):
                await self.stores.llms.clear_wake(name, wake_id)
            raise
        await self.doorbell.queued(PoolHint(wake_id, name, target_session=target), row)
        self.metrics.wake("started")
        log.info("wake %s of %s queued", wake_id, name)

    async def finished(self, task: TaskRecord, ok: bool, error: object | None) -> None:
        """A wake task ended: clear its marker; on success its member serves."""
        current = await self.stores.llms.clear_wake(task.llm, task.id)
        if ok and current and task.session_id is not None:  # a stale wake changes nothing
            await self.stores.llms.set_member_status(task.llm, task.session_id, LlmStatus.ACTIVE)
            await self.sessions.record_status(task.session_id, task.llm, LlmStatus.ACTIVE)
        self.metrics.wake("succeeded" if ok else "failed", self.clock() - task.created_at)
        if ok:
            log.info("wake %s of %s: ok", task.id, task.llm)
            return
        # the publisher's own words stay out of INFO: they may quote a webhook's answer
        code = error.get("code") if isinstance(error, dict) else None
        log.info("wake %s of %s failed (%s)", task.id, task.llm, code or "no code")
        log.debug("wake %s of %s failed: %s", task.id, task.llm, error)
