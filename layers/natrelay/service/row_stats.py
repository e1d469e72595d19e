"""Each row's requests per hour: counted as requests end, read by the overview's "last
hour" and the console's usage and latency charts (store.row_stats holds them 30 days).

Latencies are kept as histograms with buckets a quarter of an octave wide (each 19 %
above the one before, from 10 ms): a percentile read from them is the middle of its
bucket, within 9 % of the true value, and an hour of any traffic stays one small item.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from natrelay.batching import Batch
from natrelay.service.context import Context
from natrelay.service.timeline import Marks
from natrelay.store import TaskRecord
from natrelay.store.row_stats import RowHour

log = logging.getLogger("natrelay.service")

# The hourly items are kept this long (DynamoDB TTL): the charts' 30 days and the day
# that is under way.
KEEP_SECONDS = 31 * 86400
# Long-lived mode: a process adds up its rows' counts and writes them this often (one
# write per row, not one per request); a console page it serves writes them first.
FLUSH_SECONDS = 10.0
_BASE_MS = 10.0
_PER_OCTAVE = 4
_LAST_BUCKET = 99


def bucket(ms: float) -> int:
    """The histogram bucket of a duration: 0 up to 10 ms, then one per 19 %."""
    if ms <= _BASE_MS:
        return 0
    return min(_LAST_BUCKET, math.ceil(_PER_OCTAVE * math.log2(ms / _BASE_MS)))


def bucket_ms(index: int) -> float:
    """The middle of a bucket (geometric), what a percentile in it reads as."""
    if index == 0:
        return _BASE_MS / 2
    return _BASE_MS * 2 ** ((index - 0.5) / _PER_OCTAVE)


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q ≤ 1) of a histogram of buckets, in ms; None when empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bucket_ms(index)
    return None  # pragma: no cover - the loop reaches `rank`


def hour_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H")


@dataclass(frozen=True)
class Sample:
    """One request that ended (or was refused), as a row's hour counts it."""

    llm: str
    error: bool
    prompt: int = 0
    completion: int = 0
    # How long it took to its first token (streams) and to its whole answer, and each
    # leg of its timeline (service.timeline), in ms; None: not known.
    first_token_ms: float | None = None
    whole_ms: float | None = None
    legs: Mapping[str, float] | None = None

    def counts(self, now: float) -> RowHour:
        moment = datetime.fromtimestamp(now, UTC)
        out = RowHour(
            hour=moment.strftime("%Y-%m-%dT%H"),
            requests=1,
            errors=int(self.error),
            prompt=self.prompt,
            completion=self.completion,
            minutes={moment.strftime("%M"): [1, int(self.error)]},
        )
        if self.first_token_ms is not None:
            out.first_token[bucket(self.first_token_ms)] += 1
        if self.whole_ms is not None:
            out.whole[bucket(self.whole_ms)] += 1
        if self.legs is not None:
            out.timed = 1
            out.legs = {k: max(0.0, v) for k, v in self.legs.items()}
        return out


@dataclass(frozen=True)
class Recent:
    """A row's (requests, errors) in the last 60 minutes, and its totals today (UTC)."""

    last_hour: tuple[int, int]
    today: RowHour


class RowStats:
    def __init__(self, ctx: Context, *, batching: bool) -> None:
        store = ctx.stores.row_stats
        assert store is not None, "Stores.on makes the rows' stats store"
        self.store = store
        self.clock = ctx.clock
        self.tasks = ctx.tasks
        self.on = ctx.settings.row_stats
        # Long-lived mode: added up and written per row every FLUSH_SECONDS.
        self.batching = batching
        self._batch: Batch[tuple[str, RowHour]] = Batch(
            "rows' request counts", FLUSH_SECONDS, self._write
        )
        # The (row, hour) pairs this process has noted among the rows counted.
        self._marked: set[tuple[str, str]] = set()

    async def count(self, sample: Sample) -> None:
        """Count a request of a row in its hour and minute: written at once, or (long-lived
        mode) within FLUSH_SECONDS with the rest. Never raises (bookkeeping)."""
        if not self.on:
            return
        entry = (sample.llm, sample.counts(self.clock()))
        if self.batching:
            self._batch.add(entry)
        else:
            await self._write([entry])

    async def ended(self, task: TaskRecord, *, error: bool, tokens: tuple[int, int]) -> None:
        """Count a task that ended, with its times and legs (service.timeline) when a
        member ran it: one read more for a request that waited for a wake (when the wake
        ended); for its row, and for the agent called, if one was. Never raises
        (bookkeeping)."""
        if not self.on:
            return
        if task.claimed_at is None or not task.state.done:
            sample = Sample(task.llm, error, *tokens)  # no member ran it: no times
        else:
            try:
                wake = await self.tasks.get(task.wake_id, self.clock()) if task.wake_id else None
            except Exception:  # bookkeeping: the wake's time then counts as the backend's
                log.exception("the wake of task %s not read", task.id)
                wake = None
            marks = Marks.of(task, wake)
            sample = Sample(
                task.llm,
                error,
                *tokens,
                first_token_ms=marks.first_token_ms,
                whole_ms=marks.whole_ms,
                legs=marks.legs(),
            )
        await self.count(sample)
        if task.agent is not None:  # the agent the client called counts it too
            await self.count(replace(sample, llm=task.agent))

    async def flush(self) -> None:
        """Write the counts this process holds (long-lived mode) now."""
        await self._batch.flush()

    async def drain(self) -> None:
        await self._batch.drain()

    async def _write(self, entries: Iterable[tuple[str, RowHour]]) -> None:
        merged: dict[tuple[str, str], RowHour] = {}
        for llm, counts in entries:
            merged.setdefault((llm, counts.hour), RowHour(hour=counts.hour)).add(counts)
        expires_at = self.clock() + KEEP_SECONDS
        for (llm, hour), counts in merged.items():
            try:
                await self.store.add(llm, counts, expires_at=expires_at)
                if (llm, hour) not in self._marked:
                    await self.store.mark(llm, hour, expires_at=expires_at)
                    self._marked = {m for m in self._marked if m[1] == hour} | {(llm, hour)}
            except Exception:  # bookkeeping: never fail a request over it
                log.exception("requests of %s not counted", llm)

    async def names(self, hours: int) -> list[str]:
        """The rows counted in the last `hours` hours, gone ones too (one Query)."""
        return await self.store.names(hour_of(self.clock() - (hours - 1) * 3600))

    async def fallback_used(self, llm: str) -> None:
        """Count a request of the row that a fallback served (on the row asked for)."""
        if self.on:
            counts = RowHour(hour=hour_of(self.clock()), fallbacks=1)
            if self.batching:
                self._batch.add((llm, counts))
            else:
                await self._write([(llm, counts)])

    async def recent(self, llm: str) -> Recent | None:
        """The row's last 60 minutes and today (None: not counted here). One Query:
        today's hours, and the hour before when today is younger than an hour."""
        if not self.on:
            return None
        now = self.clock()
        hour_ago = datetime.fromtimestamp(now - 3600, UTC)
        since = min(hour_ago.strftime("%Y-%m-%dT%H"), hour_of(now)[:10] + "T00")
        after = hour_ago.strftime("%Y-%m-%dT%H%M")
        today = RowHour(hour=hour_of(now)[:10])
        requests = errors = 0
        for hour in await self.store.hours(llm, since):
            if hour.hour.startswith(today.hour):
                today.add(hour)
            for minute, (r, e) in hour.minutes.items():
                if hour.hour + minute > after:
                    requests += r
                    errors += e
        return Recent((requests, errors), today)

    async def hours(
        self, names: list[str], hours: int, *, totals_only: bool = False
    ) -> dict[str, list[RowHour]]:
        """Each row's last `hours` hours (the one under way included), oldest first; hours
        without requests are left out. One Query per row, side by side (`totals_only`:
        each hour's totals, without minutes, histograms or legs)."""
        since = hour_of(self.clock() - (hours - 1) * 3600)
        found = await asyncio.gather(
            *(self.store.hours(n, since, totals_only=totals_only) for n in names)
        )
        return dict(zip(names, found, strict=True))
