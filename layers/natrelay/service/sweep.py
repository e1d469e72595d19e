"""The sweep: liveness, retention and leases. Idempotent; every transition conditional.

Built from the stores, settings and clock alone; `SweepRunner` is the one entry point
that runs a sweep (the scheduled Lambda function and `natrelay dev` both use it).
"""

from __future__ import annotations

import asyncio
import logging
import time

from natrelay.metrics import Metrics, metrics_for
from natrelay.observe import configure_logging
from natrelay.service.context import Context
from natrelay.service.doorbell import Bells, Doorbell, LocalBells
from natrelay.service.endings import Endings
from natrelay.service.usage import Usage
from natrelay.settings import Settings
from natrelay.signals import Signals
from natrelay.store import ConditionFailedError, Stores
from natrelay.types import Clock
from natrelay.wire import TaskState

log = logging.getLogger("natrelay.sweep")

MAX_ATTEMPTS = 3
COUNTS = ("inactive", "raced", "deleted", "failedPending", "requeued", "failed", "extended")


class Sweeper:
    """One pass over the indexes: no table scan, whatever the table's size."""

    def __init__(
        self,
        stores: Stores,
        settings: Settings,
        clock: Clock = time.time,
        signals: Signals | None = None,
        metrics: Metrics | None = None,
        *,
        bells: Bells | None = None,
    ) -> None:
        signals = signals or Signals(settings.in_process_signals)
        ctx = Context(settings, stores, clock, signals, metrics or Metrics())
        self.metrics = ctx.metrics
        self.stores = stores
        self.settings = settings
        self.clock = clock
        self.signals = signals
        self.liveness = ctx.liveness
        self.endings = Endings(ctx, Usage(ctx))
        self.doorbell = Doorbell(ctx, stores.connections or bells or LocalBells())

    async def run(self) -> dict[str, int]:
        llms = self.stores.llms
        now = self.clock()
        cutoff = self.liveness.cutoff(now)
        retention_cutoff = now - self.settings.inactive_retention_seconds
        counts = dict.fromkeys(COUNTS, 0)
        gone: set[str] = set()
        for name, session_id in await llms.stale(cutoff):
            try:
                await llms.expire_if_stale(name, cutoff, now)
            except ConditionFailedError:
                counts["raced"] += 1  # a heartbeat landed meanwhile: it wins
                continue
            counts["inactive"] += 1
            if session_id:
                gone.add(session_id)
        for session_id in gone:
            counts["failedPending"] += await self.endings.fail_queued(
                session_id, "its publisher went offline"
            )
        for name in await llms.retired(retention_cutoff):
            try:
                await llms.delete_if_retired(name, retention_cutoff)
                counts["deleted"] += 1
            except ConditionFailedError:
                counts["raced"] += 1
        for task_id in await self.stores.tasks.expired_leases(now):
            counts[await self._expire_lease(task_id, now)] += 1
        self.metrics.publishers_online(len(await llms.live_sessions(cutoff)))
        if any(counts.values()):
            log.info("sweep: %s", counts)
        return counts

    async def _expire_lease(self, task_id: str, now: float) -> str:
        tasks = self.stores.tasks
        task = await tasks.get(task_id, now)
        if task is None or task.state is not TaskState.CLAIMED:
            return "raced"
        session = await self.stores.sessions.get(task.session_id)
        alive = session is not None and self.liveness.alive(session.heartbeat_at, now)
        young = now - task.created_at < self.settings.max_task_seconds
        try:
            if alive and young and session is not None:
                if session.generation == task.claimed_generation:
                    # The publisher that holds it is alive and the same process: still working.
                    await tasks.extend_lease_if_expired(task_id, now)
                    return "extended"
                if task.attempts < MAX_ATTEMPTS and not task.sent_any:
                    await tasks.requeue_if_lease_expired(task_id, now)
                    await self.doorbell.queued(
                        task_id, session_id=task.session_id, doorbell=session.doorbell
                    )
                    return "requeued"
        except ConditionFailedError:
            return "raced"
        return "failed" if await self.endings.fail_lost_lease(task) else "raced"


class SweepRunner:
    """Runs sweeps with stores built once (per process, or per Lambda cold start)."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        configure_logging(settings.log_format, settings.log_level)
        metrics = metrics_for(settings.metrics, "sweeper")
        stores = Stores.connect(settings, on_throttle=metrics.dynamodb_throttle)
        self.sweeper = Sweeper(stores, settings, metrics=metrics)
        self._loop = asyncio.new_event_loop()

    def __call__(self) -> dict[str, int]:
        """One sweep; returns what it did, by kind."""
        try:
            return self._loop.run_until_complete(self.sweeper.run())
        finally:
            self.sweeper.metrics.flush()

    def close(self) -> None:
        self._loop.close()
