"""Waking a hibernating backend: one wake per row and burst, across every instance."""

from __future__ import annotations

import logging

from natrelay.errors import LlmNotFoundError, PublisherOfflineError
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.ids import new_task_id
from natrelay.service.outcomes import offline
from natrelay.service.sessions import Sessions
from natrelay.store import ConditionFailedError, LlmRecord, NewTask, TaskRecord
from natrelay.wire import LlmStatus, TaskKind

log = logging.getLogger("natrelay.service")

_CLAIM_TRIES = 3


class Wakes:
    def __init__(self, ctx: Context, sessions: Sessions, doorbell: Doorbell) -> None:
        self.stores = ctx.stores
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.signals = ctx.signals
        self.metrics = ctx.metrics
        self.sessions = sessions
        self.doorbell = doorbell

    def window(self, row: LlmRecord) -> float:
        """How long a wake of the row may take: its recipe's wait plus a margin."""
        s = self.settings
        return (row.wake_max_wait or s.default_wake_seconds) + s.wake_margin_seconds

    async def ensure(self, row: LlmRecord) -> str | None:
        """Claim the row's wake (one per burst, across instances) or join the one in
        flight; the wake's id, or None if the row turned out active."""
        for _ in range(_CLAIM_TRIES):
            now = self.clock()
            wake_id = new_task_id(now)
            window = self.window(row)
            try:
                await self.stores.llms.claim_wake(row.name, wake_id, now + window, now)
            except ConditionFailedError as exc:
                old = exc.record
                if not isinstance(old, LlmRecord):
                    raise LlmNotFoundError(
                        f"the model {row.name!r} does not exist", param="model"
                    ) from exc
                if old.status is LlmStatus.ACTIVE:
                    return None
                if old.status is LlmStatus.INACTIVE:
                    raise offline(row, now) from exc
                if old.waking(now):
                    assert old.wake_id is not None
                    return old.wake_id
                continue  # the marker expired between the read and our write: try again
            assert row.session_id is not None
            await self.stores.tasks.put(
                NewTask(
                    id=wake_id,
                    kind=TaskKind.WAKE,
                    llm=row.name,
                    session_id=row.session_id,
                    created_at=now,
                    expires_at=now + window + self.settings.result_retention_seconds,
                    lease_seconds=window,
                )
            )
            await self.doorbell.queued(
                wake_id, session_id=row.session_id, doorbell=row.doorbell, row=row.name
            )
            self.metrics.wake("started")
            log.info("wake %s of %s queued", wake_id, row.name)
            return wake_id
        raise PublisherOfflineError(f"could not start a wake of {row.name}; try again")

    async def finished(self, task: TaskRecord, ok: bool, error: object | None) -> None:
        """A wake task ended: clear its marker; on success the row becomes active."""
        await self.stores.llms.clear_wake(task.llm, task.id, activate=ok)
        if ok:
            await self.sessions.record_status(task.session_id, task.llm, LlmStatus.ACTIVE)
        self.metrics.wake("succeeded" if ok else "failed", self.clock() - task.created_at)
        log.info("wake %s of %s: %s", task.id, task.llm, "ok" if ok else error)
