"""The sweep: liveness, retention and leases. Idempotent; every transition conditional."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from natrelay.errors import ConditionFailedError, RelayError, SessionNotFoundError
from natrelay.outcomes import offline_error
from natrelay.wire import TaskState

if TYPE_CHECKING:
    from natrelay.service import RelayService

log = logging.getLogger("natrelay.sweep")

MAX_ATTEMPTS = 3


class Sweeper:
    """One pass over the indexes: no table scan, whatever the table's size."""

    def __init__(self, service: RelayService) -> None:
        self.service = service

    async def run(self) -> dict[str, int]:
        svc = self.service
        s = svc.settings
        now = svc.clock()
        counts = dict.fromkeys(
            ("inactive", "raced", "deleted", "failedPending", "requeued", "failed", "extended"),
            0,
        )
        gone: set[str] = set()
        for name, session_id in await svc.io(svc.llms.stale, now - s.heartbeat_timeout_seconds):
            try:
                await svc.io(svc.llms.expire, name, now - s.heartbeat_timeout_seconds, now)
            except ConditionFailedError:
                counts["raced"] += 1  # a heartbeat landed meanwhile: it wins
                continue
            counts["inactive"] += 1
            if session_id:
                gone.add(session_id)
        for session_id in gone:
            counts["failedPending"] += await svc.fail_pending(
                session_id, "its publisher went offline"
            )
        for name in await svc.io(svc.llms.retired, now - s.inactive_retention_seconds):
            try:
                await svc.io(svc.llms.delete_retired, name, now - s.inactive_retention_seconds)
                counts["deleted"] += 1
            except ConditionFailedError:
                counts["raced"] += 1
        for task_id in await svc.io(svc.tasks.expired_leases, now):
            counts[await self._expire_lease(task_id, now)] += 1
        if any(counts.values()):
            log.info("sweep: %s", counts)
        return counts

    async def _expire_lease(self, task_id: str, now: float) -> str:
        svc = self.service
        try:
            task = await svc.io(svc.tasks.get, task_id, now)
        except RelayError:
            return "raced"
        if task.state is not TaskState.CLAIMED:
            return "raced"
        try:
            session = await svc.io(svc.llms.get_session, task.session_id)
        except SessionNotFoundError:
            session = None
        alive = (
            session is not None
            and now - session.heartbeat_at <= svc.settings.heartbeat_timeout_seconds
        )
        young = now - task.created_at < svc.settings.max_task_seconds
        try:
            if (
                alive
                and young
                and session is not None
                and session.generation == task.claimed_generation
            ):
                # The publisher that holds it is alive and the same process: still working.
                await svc.io(svc.tasks.extend_lease, task_id, now)
                return "extended"
            if alive and young and task.attempts < MAX_ATTEMPTS and not task.sent_any:
                await svc.io(svc.tasks.requeue, task_id, now)
                svc.signals.notify(f"session:{task.session_id}", task_id)
                return "requeued"
            await svc.io(
                svc.tasks.finish,
                task_id,
                TaskState.FAILED,
                offline_error(f"the publisher of {task.llm} vanished during task {task_id}"),
                now,
                now + svc.settings.result_retention_seconds,
                only_if="leaseUntil < :cutoff",
                cutoff=now,
            )
        except ConditionFailedError:
            return "raced"
        svc.signals.notify(f"task:{task_id}")
        return "failed"
