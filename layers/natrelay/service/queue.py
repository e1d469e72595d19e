"""Queueing a client's request for the pool that serves its model: `submit`, in steps."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from natrelay.errors import InvalidRequestError, PublisherOfflineError
from natrelay.service.access import Principal
from natrelay.service.affinity import Affinity, Talk, conversation
from natrelay.service.catalog import Catalog
from natrelay.service.context import Context
from natrelay.service.dispatch import queue_order
from natrelay.service.doorbell import Doorbell
from natrelay.service.empty_queues import EmptyQueues
from natrelay.service.endings import Endings, PoolHint
from natrelay.service.ids import new_task_id
from natrelay.service.local_polls import LocalPolls
from natrelay.service.metering import ask_usage, reservation
from natrelay.service.outcomes import not_served, offline
from natrelay.service.payloads import check_size, dumps
from natrelay.service.pools import Pools
from natrelay.service.queue_depths import QueueDepths
from natrelay.service.row_stats import Sample
from natrelay.service.usage import Admission, Usage
from natrelay.service.wakes import Wake, Wakes
from natrelay.store import (
    ConditionFailedError,
    IdempotencyRecord,
    LlmRecord,
    NewTask,
    TaskRecord,
    queued_task,
)
from natrelay.types import JsonObject
from natrelay.wire import Endpoint, LlmStatus, TaskKind, trace

# An Idempotency-Key's record, and the task an earlier record of it named that is gone.
Once = tuple[IdempotencyRecord, str | None]


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
        polls: LocalPolls,
        endings: Endings,
        affinity: Affinity,
        empty: EmptyQueues,
    ) -> None:
        self.tasks = ctx.tasks
        self.empty = empty
        self.depths = QueueDepths(ctx, empty, usage)
        self.affinity = affinity
        self.idempotency = ctx.stores.idempotency
        self.liveness = ctx.liveness
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.catalog = catalog
        self.wakes = wakes
        self.usage = usage
        self.doorbell = doorbell
        self.pools = pools
        self.polls = polls
        self.endings = endings

    async def submit(
        self,
        principal: Principal,
        name: str,
        body: JsonObject,
        *,
        stream: bool,
        endpoint: Endpoint = Endpoint.CHAT,
        fast: bool = True,
        agent: str | None = None,
        received: float | None = None,
    ) -> TaskRecord:
        """Queue an infer task (a request to `endpoint`) for the row's pool, waking the
        backend if it sleeps; EndpointNotServedError if the pool does not serve it. With
        `fast`, hand it to an idle poll of this process instead when there is one (the
        fast path: service.local_polls).

        The caller's key is admitted against its limits first (RateLimitError), with
        an estimate of the tokens it may use reserved; a stream asks the backend for its
        usage (service.metering). `received`: when the relay began on the request (the
        start of its timeline, service.timeline; default now).
        """
        talk = conversation(endpoint, body, principal.conversation, principal.key_id)
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
            talk=talk,
            agent=agent,
            received=received,
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
        agent: str | None = None,
        received: float | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Submit, unless the caller's key already sent this Idempotency-Key `key` within
        the result retention: then the task it started (and True: nothing new runs).

        The same key with another request is InvalidRequestError.
        """
        s = self.settings
        talk = conversation(endpoint, body, principal.conversation, principal.key_id)
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
                talk=talk,
                agent=agent,
                received=received,
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
        once: Once | None = None,
        fast: bool = False,
        reserve: int = 0,
        talk: Talk | None = None,
        agent: str | None = None,
        received: float | None = None,
    ) -> TaskRecord:
        received = self.clock() if received is None else received
        row, status = await self._open_pool(principal, name, endpoint)
        active = status is LlmStatus.ACTIVE
        route = await self.affinity.route(
            row,
            talk if active else None,
            (lambda member: self.polls.can_take(row, member)) if self.polls.enabled else None,
        )
        # A poll here takes it at once (its member's, if it has one), unless requests
        # wait in the pool's queue already: those go first (their classes and ages).
        taker = fast and active and self.polls.can_take(row, route.member)
        fast, oldest = taker and self.empty.known_empty(row.name), None
        if not fast:
            depth, oldest = await self.depths.check(row, count=taker)
            fast = taker and depth == 0
        task_id = new_task_id(self.clock())
        admission = await self._admit(principal, task_id, status, reserve)
        try:  # a request that is not queued after all gives its admission back
            wake = await self._wake(row, status, oldest)
            task = self._new_task(
                task_id,
                row,
                raw,
                principal=principal,
                admission=admission,
                wake=wake,
                stream=stream,
                endpoint=endpoint,
                agent=agent,
                received=received,
            )
            if route.key is not None:
                prefer = route.member if route.prefer_until is not None else None
                until = route.prefer_until if prefer else None
                task = replace(task, affinity=route.key, prefer=prefer, prefer_until=until)
            if fast and (handed := await self._hand(row, task, route.member)) is not None:
                return handed
            await self._put(task, once)
        except Exception:
            await self.usage.release(principal, admission)
            raise
        hint = PoolHint(
            task.id,
            task.llm,
            wake_target=task.wake_target,
            prefer=task.prefer,
            prefer_until=task.prefer_until,
            order=task.queue_order,
        )
        await self.doorbell.queued(hint, row)
        if task.prefer is not None:  # its member's moment over, any poll may take it
            self.affinity.after_wait(self.doorbell.queued, replace(hint, prefer=None), row)
        return queued_task(task)

    async def _open_pool(
        self, principal: Principal, name: str, endpoint: Endpoint
    ) -> tuple[LlmRecord, LlmStatus]:
        """The row whose pool takes the request (an alias's own row) and the pool's
        status; refused for a public row, a pool that cannot answer, or an endpoint it
        does not serve. Members found dead leave the pool on the way."""
        row = await self.catalog.get(principal, name)
        if row.agent is not None:  # agents are routed to their rows before the queue
            raise PublisherOfflineError(f"{name!r} is an agent: it has no queue of its own")
        if row.public:
            raise InvalidRequestError(
                f"{name!r} is a public row: the relay calls it at once, without a task; "
                "send the request without Prefer: respond-async",
                param="Prefer",
            )
        now = self.clock()
        status = row.pool_status(now, self.liveness.timeout)
        if status in (LlmStatus.INACTIVE, LlmStatus.UNAVAILABLE):
            await self.usage.rows.count(Sample(row.name, error=True))  # the console shows refusals
            raise offline(row, now, status)
        if endpoint not in row.endpoints(now, self.liveness.timeout):
            raise not_served(row, endpoint)
        await self.pools.prune([row])  # writes only when members died (rare)
        return row, status

    async def _admit(
        self, principal: Principal, task_id: str, status: LlmStatus, reserve: int
    ) -> Admission:
        """Let the request in against its key's limits (`reserve` tokens of its budget
        held), a slot held until the task could last (a wake's window more when the pool
        sleeps)."""
        s = self.settings
        longest = s.lease_seconds
        if status is LlmStatus.HIBERNATING:
            longest += self.wakes.window(None)
        deadline = self.clock() + longest + s.result_retention_seconds
        return await self.usage.admit(principal, task_id, deadline, reserve)

    async def _wake(self, row: LlmRecord, status: LlmStatus, oldest: float | None) -> Wake | None:
        """Wake a member of a sleeping pool (the wake the request waits for); or, with
        every active member busy long enough, one more member (the request does not wait
        for that one)."""
        if status is LlmStatus.HIBERNATING:
            return await self.wakes.ensure(row)
        if oldest is not None and self._wake_more(row, self.clock() - oldest):
            await self.wakes.ensure(row, more=True)
        return None

    def _new_task(
        self,
        task_id: str,
        row: LlmRecord,
        raw: bytes,
        *,
        principal: Principal,
        admission: Admission,
        wake: Wake | None,
        stream: bool,
        endpoint: Endpoint,
        received: float,
        agent: str | None = None,
    ) -> NewTask:
        """The infer task of the request; its lease covers the wake it waits for. It
        carries the request's trace context (wire.trace) to its publisher."""
        s, now = self.settings, self.clock()
        member = row.members.get(wake.target) if wake and wake.target else None
        lease = s.lease_seconds + (self.wakes.window(member) if wake else 0)
        return NewTask(
            id=task_id,
            kind=TaskKind.INFER,
            llm=row.name,
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
            limited=admission.slot is not None or principal.tokens_per_day is not None,
            priority=principal.priority,
            queue_order=queue_order(principal.priority, now, s.batch_aging_seconds),
            agent=agent,
            received_at=received,
            traceparent=trace.current.get(),
        )

    async def _hand(self, row: LlmRecord, task: NewTask, prefer: str | None) -> TaskRecord | None:
        """Hand the task, claimed, to a poll of this process that takes it now (or to a
        long-polling member between two polls; only `prefer`'s, if named); None if none
        does."""
        taker = self.polls.take(row, prefer)
        if taker is None:
            return None
        claimed = await self.tasks.put_claimed(task, taker.session, self.clock())
        if self.polls.deliver(taker, claimed):
            self.affinity.claimed(claimed)
            return claimed
        return await self.endings.hand_back(claimed) or claimed  # its poll left meanwhile

    async def _put(self, task: NewTask, once: Once | None) -> None:
        """Queue the task in its pool (with its Idempotency-Key record, if it has one)."""
        if once is None:
            await self.tasks.put(task)
        else:
            record, gone = once
            await self.tasks.put(task, replace(record, task_id=task.id), replacing=gone)
        self.depths.queued(task.llm, task.created_at)

    def _wake_more(self, row: LlmRecord, waited: float) -> bool:
        threshold = self.depths.wake_after(row)
        return bool(threshold) and waited > threshold and bool(self.wakes.wakeable(row))
