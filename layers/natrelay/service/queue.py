"""Queueing a client's request for the publisher that serves its model."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from natrelay.errors import InvalidRequestError, PublisherOfflineError, QueueFullError
from natrelay.service.access import Principal
from natrelay.service.catalog import Catalog
from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.endings import PoolHint
from natrelay.service.ids import new_task_id
from natrelay.service.metering import ask_usage, reservation
from natrelay.service.outcomes import not_served, offline
from natrelay.service.payloads import check_size, dumps
from natrelay.service.pools import Pools
from natrelay.service.row_stats import Sample
from natrelay.service.usage import Usage
from natrelay.service.wakes import Wakes
from natrelay.store import ConditionFailedError, IdempotencyRecord, LlmRecord, NewTask, TaskRecord
from natrelay.types import JsonObject
from natrelay.wire import Endpoint, LlmStatus, TaskKind, TaskState


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Queue:
    def __init__(
        self,
        ctx: Context,
        catalog: Catalog,
        wakes: Wakes,
        usage: Usage,
        *,
        doorbell: Doorbell,
        pools: Pools,
    ) -> None:
        self.pools = pools
        self.tasks = ctx.stores.tasks
        self.queues = ctx.stores.queues
        self.liveness = ctx.liveness
        self.idempotency = ctx.stores.idempotency
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.signals = ctx.signals
        self.catalog = catalog
        self.wakes = wakes
        self.usage = usage
        self.doorbell = doorbell
        self.handoff = pools.endings.handoff

    async def submit(
        self,
        principal: Principal,
        name: str,
        body: JsonObject,
        *,
        stream: bool,
        endpoint: Endpoint = Endpoint.CHAT,
        fast: bool = True,
    ) -> TaskRecord:
        """Queue an infer task (a request to `endpoint`) for the row's pool, waking the
        backend if it sleeps; EndpointNotServedError if the pool does not serve it. With
        `fast`, hand it to an idle poll of this process instead when there is one (the
        fast path: service.handoff).

        The caller's key is admitted against its limits first (RateLimitError), with
        an estimate of the tokens it may use reserved; a stream asks the backend for its
        usage (service.metering).
        """
        body = ask_usage(body, endpoint, stream)
        raw = self._encoded(body)
        return await self._submit(
            principal,
            name,
            raw,
            stream=stream,
            endpoint=endpoint,
            fast=fast,
            reserve=reservation(body, len(raw)),
        )

    async def submit_once(
        self,
        principal: Principal,
        name: str,
        body: JsonObject,
        *,
        stream: bool,
        key: str,
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> tuple[TaskRecord, bool]:
        """Submit, unless the caller's key already sent this Idempotency-Key `key` within
        the result retention: then the task it started (and True: nothing new runs).

        The same key with another request is InvalidRequestError.
        """
        s = self.settings
        body = ask_usage(body, endpoint, stream)
        raw = self._encoded(body)
        # the same body sent to another endpoint is another request
        tagged = raw if endpoint is Endpoint.CHAT else endpoint.value.encode() + b" " + raw
        key_hash, request_hash = _sha256(key.encode()), _sha256(tagged)
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
            task = await self._submit(
                principal,
                name,
                raw,
                stream=stream,
                endpoint=endpoint,
                once=(once, gone),
                reserve=reservation(body, len(raw)),
            )
            return task, False
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
        endpoint: Endpoint,
        once: tuple[IdempotencyRecord, str | None] | None = None,
        fast: bool = False,
        reserve: int = 0,
    ) -> TaskRecord:
        s = self.settings
        row = await self.catalog.get(principal, name)
        if row.public:
            raise InvalidRequestError(
                f"{name!r} is a public row: the relay calls it at once, without a task; "
                "send the request without Prefer: respond-async",
                param="Prefer",
            )
        name = row.name  # an alias queues for its row's pool
        now = self.clock()
        status = row.pool_status(now, self.liveness.timeout)
        if status in (LlmStatus.INACTIVE, LlmStatus.UNAVAILABLE):
            await self.usage.rows.count(Sample(name, error=True))  # the console shows refusals
            raise offline(row, now, status)
        if endpoint not in row.endpoints(now, self.liveness.timeout):
            raise not_served(row, endpoint)
        await self.pools.prune([row])  # writes only when members died (rare)
        # An idle poll here takes it at once: no queue to check
        fast = fast and status is LlmStatus.ACTIVE and self.handoff.can_take(row)
        oldest = None if fast else await self._check_queue(row)
        task_id = new_task_id(now)
        hibernating = status is LlmStatus.HIBERNATING
        longest = s.lease_seconds + (self.wakes.window(None) if hibernating else 0)
        admission = await self.usage.admit(
            principal, task_id, now + longest + s.result_retention_seconds, reserve
        )
        try:  # a request that is not queued after all gives its admission back
            wake = await self.wakes.ensure(row) if hibernating else None
            if not hibernating and oldest is not None and self._wake_more(row, now - oldest):
                await self.wakes.ensure(row, more=True)  # busy members: wake one more
            now = self.clock()
            member = row.members.get(wake.target) if wake and wake.target else None
            lease = s.lease_seconds + (self.wakes.window(member) if wake else 0)
            task = NewTask(
                id=task_id,
                kind=TaskKind.INFER,
                llm=name,
                created_at=now,
                expires_at=now + lease + s.result_retention_seconds,
                lease_seconds=lease,
                stream=stream,
                request=raw,
                wake_id=wake.id if wake else None,
                wake_target=wake.target if wake else None,
                client_key=principal.key_id,
                usage_day=admission.day,
                slot=admission.slot,
                reserved=admission.reserved,
                endpoint=endpoint.value,
            )
            limited = task.slot is not None or principal.tokens_per_day is not None
            handed = self.handoff.hand(row, task, settle_first=limited) if fast else None
            if handed is not None:
                return handed
            if once is None:
                await self.tasks.put(task)
            else:
                record, gone = once
                await self.tasks.put(task, replace(record, task_id=task_id), replacing=gone)
        except Exception:
            await self.usage.release(principal, admission)
            raise
        await self.doorbell.queued(PoolHint(task.id, name, wake_target=task.wake_target), row)
        return TaskRecord(
            id=task.id,
            kind=task.kind,
            llm=name,
            session_id=None,
            state=TaskState.PENDING,
            created_at=now,
            lease_seconds=lease,
            updated_at=now,
            stream=stream,
            wake_id=task.wake_id,
            wake_target=task.wake_target,
            request_size=len(raw),
            endpoint=endpoint.value,
            client_key=principal.key_id,
            usage_day=admission.day,
            slot=admission.slot,
            reserved=admission.reserved,
            expires_at=task.expires_at,
        )

    async def _check_queue(self, row: LlmRecord) -> float | None:
        """QueueFullError if the pool's queue holds its most; when the oldest infer task
        waiting in it was queued (None: nothing waits, or no limit to check)."""
        depth_limit = _first(row.max_queue_depth, self.settings.max_queue_depth)
        wake_after = _first(row.wake_after_queue_seconds, self.settings.wake_after_queue_seconds)
        if not depth_limit and not wake_after:
            return None  # nothing to check: no read
        depth, oldest = await self.queues.depth(row.name, int(depth_limit or 1))
        if depth_limit and depth >= depth_limit:
            await self.usage.rows.count(Sample(row.name, error=True))
            raise QueueFullError(
                f"every member serving {row.name!r} is busy and {depth} requests already "
                "wait for it; try again shortly",
                retry_after=max(1, int(self.settings.lease_seconds // 10)),
            )
        return oldest

    def _wake_more(self, row: LlmRecord, waited: float) -> bool:
        threshold = _first(row.wake_after_queue_seconds, self.settings.wake_after_queue_seconds)
        return bool(threshold) and waited > threshold and bool(self.wakes.wakeable(row))


def _first(value: float | None, default: float) -> float:
    return value if value is not None else default
