"""The sweep: liveness, retention and leases. Idempotent; every transition conditional.

The composition root (service.assembly) builds the sweeper from the same parts as the
relay: in server mode it is the relay's own, sharing the tasks its process holds in
memory; `SweepRunner` there runs it where it runs alone (the scheduled Lambda function).
"""

from __future__ import annotations

import asyncio
import logging

from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.endings import Endings, PoolHint
from natrelay.service.usage import Usage
from natrelay.store import ConditionFailedError, LlmRecord, SessionRecord, TaskRecord
from natrelay.wire import LlmStatus, TaskState

log = logging.getLogger("natrelay.sweep")

MAX_ATTEMPTS = 3
# The sweep counts a pool's queue up to this many (for the queue-depth metric).
QUEUE_COUNT = 1000
COUNTS = (
    "inactive",
    "raced",
    "deleted",
    "failedPending",
    "requeued",
    "failed",
    "extended",
    "spilled",
)


class Sweeper:
    """One pass over the indexes: no table scan, whatever the table's size."""

    def __init__(self, ctx: Context, usage: Usage, endings: Endings, doorbell: Doorbell) -> None:
        self.metrics = ctx.metrics
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.usage = usage
        self.endings = endings
        self.doorbell = doorbell

    async def run(self) -> dict[str, int]:
        rows = self.stores.row_sweep
        now = self.clock()
        cutoff = self.liveness.cutoff(now)
        retention_cutoff = now - self.settings.inactive_retention_seconds
        counts = dict.fromkeys(COUNTS, 0)
        # tasks held in memory past their lease are written out first (server mode)
        counts["spilled"] = await self.tasks.spill_expired(now)
        for name in await rows.stale(cutoff):
            try:
                await rows.expire_if_stale(name, cutoff, now)
            except ConditionFailedError:
                counts["raced"] += 1  # a heartbeat landed meanwhile: it wins
                continue
            counts["inactive"] += 1
            # no member of the pool lives: nobody will take what waits for it
            counts["failedPending"] += await self.endings.fail_queued(
                name, "its publishers went offline"
            )
        for name in await rows.retired(retention_cutoff):
            try:
                await rows.delete_if_retired(name, retention_cutoff)
                counts["deleted"] += 1
            except ConditionFailedError:
                counts["raced"] += 1
        for task_id in await self.stores.leases.expired(now):
            counts[await self._expire_lease(task_id, now)] += 1
        await self._count_online(await rows.live(cutoff), now)
        await self.usage.rows.flush()  # the rows' failed requests it counted, now
        if any(counts.values()):
            log.info("sweep: %s", counts)
        return counts

    async def _count_online(self, names: list[str], now: float) -> None:
        """Publishers online (live sessions of any pool), and each pool's queue."""
        sessions: set[str] = set()
        for name in names:
            row = await self.stores.llms.get(name)
            if row is None:
                continue
            sessions.update(m.session_id for m in row.live_members(now, self.liveness.timeout))
            if row.agent is not None:
                continue  # an agent has no queue
            depth, oldest = await self.stores.queues.depth(name, QUEUE_COUNT)
            self.metrics.queue(name, depth, now - oldest if oldest is not None else 0.0)
        self.metrics.publishers_online(len(sessions))

    async def _live_pool(self, llm: str, now: float) -> LlmRecord | None:
        """The row of the pool, if a member of it lives."""
        row = await self.stores.llms.get(llm)
        if row is None or row.pool_status(now, self.liveness.timeout) is LlmStatus.INACTIVE:
            return None
        return row

    async def _expire_lease(self, task_id: str, now: float) -> str:
        leases = self.stores.leases
        task = await self.tasks.get(task_id, now)
        if task is None or task.state is not TaskState.CLAIMED or task.session_id is None:
            return "raced"
        session = await self.stores.sessions.get(task.session_id)
        alive = session is not None and self.liveness.alive(session.heartbeat_at, now)
        young = now - task.created_at < self.settings.max_task_seconds
        try:
            same = session is not None and session.generation == task.claimed_generation
            if (
                alive
                and young
                and same
                and session is not None
                and confirmed(session, task) is not False
            ):
                # The publisher that holds it lives, is the same process, and runs it (or
                # does not say what it runs: an older publisher).
                await leases.extend_if_expired(task_id, now)
                return "extended"
            # It died, restarted, or says it does not run it (a poll answer lost on the
            # way, a task it gave up on): back to the pool if nothing was sent and a
            # member lives to take it.
            if (
                young
                and task.attempts < MAX_ATTEMPTS
                and not task.sent_any
                and (row := await self._live_pool(task.llm, now)) is not None
            ):
                await leases.requeue_if_expired(task, now)
                await self.doorbell.queued(PoolHint(task_id, task.llm), row)
                return "requeued"
        except ConditionFailedError:
            return "raced"
        return "failed" if await self.endings.fail_lost_lease(task) else "raced"


def confirmed(session: SessionRecord, task: TaskRecord) -> bool | None:
    """Does the session's publisher say it runs the task? None when it cannot tell: the
    publisher never says (an older one), or its last word came too soon after the claim
    to have seen the task (half a lease: a heartbeat sent before the poll answer
    arrived may land after the claim)."""
    if session.confirmed_at is None:
        return None
    if task.id in session.running:
        return True
    claimed_at = task.claimed_at or task.created_at
    return None if session.confirmed_at - claimed_at < task.lease_seconds / 2 else False


async def sweep_every(sweeper: Sweeper, seconds: float) -> None:
    """Sweep every `seconds` until cancelled (server mode: the API process's own
    sweeper, on its event loop)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await sweeper.run()
        except Exception:
            log.exception("sweep failed")
        finally:
            sweeper.metrics.flush()
