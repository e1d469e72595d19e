"""Queueing a client's request for the publisher that serves its model."""

from __future__ import annotations

from natrelay.service.access import Principal
from natrelay.service.catalog import Catalog
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.ids import new_task_id
from natrelay.service.outcomes import offline
from natrelay.service.payloads import check_size, dumps
from natrelay.service.usage import Usage
from natrelay.service.wakes import Wakes
from natrelay.store import NewTask, TaskRecord
from natrelay.types import JsonObject
from natrelay.wire import LlmStatus, TaskKind, TaskState


class Queue:
    def __init__(
        self, ctx: Context, catalog: Catalog, wakes: Wakes, usage: Usage, doorbell: Doorbell
    ) -> None:
        self.tasks = ctx.stores.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.signals = ctx.signals
        self.catalog = catalog
        self.wakes = wakes
        self.usage = usage
        self.doorbell = doorbell

    async def submit(
        self, principal: Principal, name: str, body: JsonObject, *, stream: bool
    ) -> TaskRecord:
        """Queue an infer task for the row's publisher, waking the backend if it sleeps.

        The caller's key is admitted against its limits first (RateLimitError).
        """
        s = self.settings
        raw = dumps(body)
        check_size(
            raw, s.max_body_bytes, "request body is {size} bytes; the limit is {limit} bytes"
        )
        row = await self.catalog.get(principal, name)
        if not self.catalog.serving(row):
            raise offline(row, self.clock())
        task_id = new_task_id(self.clock())
        hibernating = row.status is LlmStatus.HIBERNATING
        longest = s.lease_seconds + (self.wakes.window(row) if hibernating else 0)
        admission = await self.usage.admit(
            principal, task_id, self.clock() + longest + s.result_retention_seconds
        )
        wake_id = await self.wakes.ensure(row) if hibernating else None
        assert row.session_id is not None
        now = self.clock()
        lease = s.lease_seconds + (self.wakes.window(row) if wake_id else 0)
        task = NewTask(
            id=task_id,
            kind=TaskKind.INFER,
            llm=name,
            session_id=row.session_id,
            created_at=now,
            expires_at=now + lease + s.result_retention_seconds,
            lease_seconds=lease,
            stream=stream,
            request=raw,
            wake_id=wake_id,
            client_key=principal.key_id,
            usage_day=admission.day,
            slot=admission.slot,
        )
        await self.tasks.put(task)
        await self.doorbell.queued(
            task.id, session_id=row.session_id, doorbell=row.doorbell, row=row.name
        )
        return TaskRecord(
            id=task.id,
            kind=task.kind,
            llm=name,
            session_id=task.session_id,
            state=TaskState.PENDING,
            created_at=now,
            lease_seconds=lease,
            updated_at=now,
            stream=stream,
            wake_id=wake_id,
            request_size=len(raw),
            client_key=principal.key_id,
            usage_day=admission.day,
            slot=admission.slot,
        )
