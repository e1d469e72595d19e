"""Queueing a client's request for the publisher that serves its model."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from natrelay.errors import InvalidRequestError, PublisherOfflineError
from natrelay.service.access import Principal
from natrelay.service.catalog import Catalog
from natrelay.service.context import Context
from natrelay.service.endings import session_key
from natrelay.service.ids import new_task_id
from natrelay.service.outcomes import offline
from natrelay.service.payloads import check_size, dumps
from natrelay.service.usage import Usage
from natrelay.service.wakes import Wakes
from natrelay.store import ConditionFailedError, IdempotencyRecord, NewTask, TaskRecord
from natrelay.types import JsonObject
from natrelay.wire import LlmStatus, TaskKind, TaskState


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Queue:
    def __init__(self, ctx: Context, catalog: Catalog, wakes: Wakes, usage: Usage) -> None:
        self.tasks = ctx.stores.tasks
        self.idempotency = ctx.stores.idempotency
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.signals = ctx.signals
        self.catalog = catalog
        self.wakes = wakes
        self.usage = usage

    async def submit(
        self, principal: Principal, name: str, body: JsonObject, *, stream: bool
    ) -> TaskRecord:
        """Queue an infer task for the row's publisher, waking the backend if it sleeps.

        The caller's key is admitted against its limits first (RateLimitError).
        """
        return await self._submit(principal, name, self._encoded(body), stream=stream)

    async def submit_once(
        self, principal: Principal, name: str, body: JsonObject, *, stream: bool, key: str
    ) -> tuple[TaskRecord, bool]:
        """Submit, unless the caller's key already sent this Idempotency-Key `key` within
        the result retention: then the task it started (and True: nothing new runs).

        The same key with another request is InvalidRequestError.
        """
        s = self.settings
        raw = self._encoded(body)
        key_hash, request_hash = _sha256(key.encode()), _sha256(raw)
        now = self.clock()
        seen = await self.idempotency.get(principal.key_id, key_hash, now)
        gone: str | None = None
        if seen is not None:
            first = await self._replay(seen, request_hash, now)
            if first is not None:
                return first, True
            gone = seen.task_id  # its task is past the retention: run anew
        once = IdempotencyRecord(
            client_key=principal.key_id,
            key_hash=key_hash,
            task_id="",
            request_hash=request_hash,
            expires_at=now + s.max_task_seconds + s.result_retention_seconds,
        )
        try:
            return await self._submit(principal, name, raw, stream=stream, once=(once, gone)), False
        except ConditionFailedError as exc:  # another request with this key won the race
            if isinstance(exc.record, IdempotencyRecord):
                first = await self._replay(exc.record, request_hash, self.clock())
                if first is not None:
                    return first, True
            raise PublisherOfflineError(
                "a request with this Idempotency-Key is starting; try again", retryable=True
            ) from exc

    async def _replay(
        self, seen: IdempotencyRecord, request_hash: str, now: float
    ) -> TaskRecord | None:
        if seen.request_hash != request_hash:
            raise InvalidRequestError(
                "this Idempotency-Key was already used with another request; send a new key",
                param="Idempotency-Key",
            )
        return await self.tasks.get(seen.task_id, now)

    def _encoded(self, body: JsonObject) -> bytes:
        raw = dumps(body)
        check_size(
            raw,
            self.settings.max_body_bytes,
            "request body is {size} bytes; the limit is {limit} bytes",
        )
        return raw

    async def _submit(
        self,
        principal: Principal,
        name: str,
        raw: bytes,
        *,
        stream: bool,
        once: tuple[IdempotencyRecord, str | None] | None = None,
    ) -> TaskRecord:
        s = self.settings
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
        if once is None:
            await self.tasks.put(task)
        else:
            record, gone = once
            try:
                await self.tasks.put(task, replace(record, task_id=task_id), replacing=gone)
            except ConditionFailedError:
                await self.usage.release(principal, admission)
                raise
        self.signals.notify(session_key(row.session_id), task.id)
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
