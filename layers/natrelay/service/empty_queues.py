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
        return self.holds_only(name, 0)

    def holds_only(self, name: str, told: int) -> bool:
        """Whether the pool's queue holds at most the `told` tasks a poll was told of: a
        poll found it empty lately, and exactly that many notifications came since."""
        key = pool_topic(name)
        seen = self._seen.get(key)
        return (
            seen is not None
            and self.wakeups.seq(key) - seen[0] == told
            and self.clock() - seen[1] < self.ttl
        )

    async def pending(self, name: str, limit: int) -> list[Queued]:
        """What the pool's queue index lists, oldest first (nothing, and no Query, while
        the pool is known empty)."""
        if self.known_empty(name):
            return []
        mark = self._mark(name)  # before the Query: a task queued during it counts
        queued = await self.queues.pending(name, limit)
        self._remember(name, mark, empty=not queued)
        return queued

    async def depth(self, name: str, at_most: int) -> tuple[int, float | None]:
        """How many tasks wait in the pool's queue (counting to `at_most` + 1 at most),
        and when the oldest infer task among them was queued (store.queues); an empty
        queue is remembered as `pending`'s is."""
        mark = self._mark(name)
        depth, oldest = await self.queues.depth(name, at_most)
        self._remember(name, mark, empty=not depth)
        return depth, oldest

    def _mark(self, name: str) -> tuple[int, float]:
        return self.wakeups.seq(pool_topic(name)), self.clock()

    def _remember(self, name: str, mark: tuple[int, float], *, empty: bool) -> None:
        if empty and self.enabled:
            self._seen[pool_topic(name)] = mark
