"""What a poll of this process need not look up again: pools whose queue it found empty."""

from __future__ import annotations

from natrelay.service.context import Context
from natrelay.store import Queued
from natrelay.wakeups import pool_topic

# A process alone on its tables (the fast path on says so, docs/relay.md) that also
# sweeps them itself (`natrelay dev`) queues, requeues and hands back every task of its
# pools here, and each of those wakes the pool's polls: they look at the queue again
# only this often, as a safety net. (A sweeper in another process, or a second relay, is
# not heard of: then the idle poll's slowest re-check applies.)
ALONE_RECHECK_SECONDS = 30.0


class EmptyQueues:
    """Pools whose queue a poll of this process just found empty, and found so since no
    task was queued for them here (no notification on the pool's key): the next poll need
    not look again. Another process's writes are not heard of, so the memory is trusted
    only as long as an idle poll's slowest re-check (poll_max_interval_seconds), or
    ALONE_RECHECK_SECONDS when the process is `alone` on its tables and sweeps them
    itself; never without in-process wake-ups (Lambda mode)."""

    def __init__(self, ctx: Context, *, alone: bool) -> None:
        self.queues = ctx.stores.queues
        self.clock = ctx.clock
        self.wakeups = ctx.wakeups
        self.enabled = ctx.wakeups.enabled
        self.ttl = ctx.settings.poll_max_interval_seconds
        if alone and self.enabled:
            self.ttl = max(self.ttl, ALONE_RECHECK_SECONDS)
        self._seen: dict[str, tuple[int, float]] = {}

    def known_empty(self, name: str) -> bool:
        """Whether a poll found the pool's queue empty lately, and nothing was queued for
        it here since."""
        key = pool_topic(name)
        seen = self._seen.get(key)
        seq = self.wakeups.seq(key)
        return seen is not None and seen[0] == seq and self.clock() - seen[1] < self.ttl

    async def pending(self, name: str, limit: int) -> list[Queued]:
        """What the pool's queue index lists, oldest first (nothing, and no Query, while
        the pool is known empty)."""
        if self.known_empty(name):
            return []
        key = pool_topic(name)
        seq = self.wakeups.seq(key)
        mark = (seq, self.clock())  # before the Query: a task queued during it counts
        queued = await self.queues.pending(name, limit)
        if not queued and self.enabled:
            self._seen[key] = mark
        return queued
