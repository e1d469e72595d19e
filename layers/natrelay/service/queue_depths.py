"""How deep a pool's queue is, as a new request needs to know it: whether the queue is
full (`NATRELAY_MAX_QUEUE_DEPTH`), when its oldest request was queued (waking one more
member: `NATRELAY_WAKE_AFTER_QUEUE_SECONDS`), and whether anything waits at all (the
fast path hands a request to a poll only past an empty queue).

Reading the depth is a Query of the queue's index that returns every entry up to the
limit: under overload, hundreds of items for every request, and each request that piles
up makes the next read longer. Measured (tests.perf.smart_pools' priority setup, one
member, a backlog growing to ~150): with that read on every request the member served
half as many requests a second, and interactive requests waited 13 s at p95 instead of
0.5 s. So a process reads a pool's depth at most once every REREAD_SECONDS and adds what
it queued itself since; it reads again at once when that estimate reaches the limit.
(A request that finds a poll of this process free goes to it only past an empty queue:
known empty (service.empty_queues), or so by the reading; a reading that says work waits
when it has drained since only sends the request through the queue, where that poll
takes it.) Across several relay processes (Lambda instances) the queue may pass
its limit by what the others queue within REREAD_SECONDS: the limit bounds a backlog,
it is not a count to the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from natrelay.errors import QueueFullError
from natrelay.service.context import Context
from natrelay.service.empty_queues import EmptyQueues
from natrelay.service.row_stats import Sample
from natrelay.service.usage import Usage
from natrelay.store import LlmRecord

# How old a process's reading of a pool's queue depth may be before it reads it again.
REREAD_SECONDS = 1.0


@dataclass
class _Reading:
    at: float
    depth: int
    oldest: float | None
    # Tasks this process queued in the pool since the reading.
    queued: int = 0


class QueueDepths:
    def __init__(self, ctx: Context, empty: EmptyQueues, usage: Usage) -> None:
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.empty = empty
        self.usage = usage
        self._readings: dict[str, _Reading] = {}
        self._reads: dict[str, asyncio.Future[_Reading]] = {}

    async def check(self, row: LlmRecord, *, count: bool) -> tuple[int, float | None]:
        """QueueFullError if the pool's queue holds its most; else how many tasks wait in
        it and when the oldest infer task among them was queued ((0, None) unread when
        there is no limit to check and no `count` asked)."""
        depth_limit = first(row.max_queue_depth, self.settings.max_queue_depth)
        if not depth_limit and not self.wake_after(row) and not count:
            return 0, None  # nothing to check: no read
        depth, oldest = await self._depth(row.name, int(depth_limit or 1))
        if depth_limit and depth >= depth_limit:
            await self.usage.rows.count(Sample(row.name, error=True))
            raise QueueFullError(
                f"every member serving {row.name!r} is busy and {depth} requests already "
                "wait for it; try again shortly",
                retry_after=max(1, int(self.settings.lease_seconds // 10)),
            )
        return depth, oldest

    def queued(self, name: str, at: float) -> None:
        """This process queued a task in the pool (at `at`)."""
        reading = self._readings.get(name)
        if reading is not None:
            reading.queued += 1
            if reading.oldest is None:
                reading.oldest = at

    def wake_after(self, row: LlmRecord) -> float:
        """How long a request may wait in the pool's queue before one more member is
        woken (0: never)."""
        return first(row.wake_after_queue_seconds, self.settings.wake_after_queue_seconds)

    async def _depth(self, name: str, at_most: int) -> tuple[int, float | None]:
        now = self.clock()
        reading = self._readings.get(name)
        if reading is not None and now - reading.at < REREAD_SECONDS:
            estimate = reading.depth + reading.queued
            if estimate < at_most:
                return estimate, reading.oldest
        reading = await self._read(name, at_most, now)
        return reading.depth + reading.queued, reading.oldest

    async def _read(self, name: str, at_most: int, now: float) -> _Reading:
        """A fresh reading of the pool's depth: one read at a time per pool (the requests
        that come while it is on its way wait for it rather than read again)."""
        pending = self._reads.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._read_now(name, at_most, now))
            self._reads[name] = pending
            pending.add_done_callback(lambda _: self._reads.pop(name, None))
        return await asyncio.shield(pending)

    async def _read_now(self, name: str, at_most: int, now: float) -> _Reading:
        depth, oldest = await self.empty.depth(name, at_most)
        reading = self._readings[name] = _Reading(now, depth, oldest)
        return reading


def first(value: float | None, default: float) -> float:
    """A row's own setting, else the relay's."""
    return value if value is not None else default
