"""The fast path (long-lived mode): a request handed in memory to a poll of this process.

When a poll of a member that may take a request waits idle in this process, the task
skips DynamoDB on the way in: it is handed to the poll claimed, its chunks and result
come back in memory and the client is answered from them. The task's durable record
(the finished task item with its request, result and chunks; the caller then records
usage) is written right after the answer, before the publisher's post returns.

Anything off the happy path moves the task to DynamoDB as it stands ("spills" it) and
the durable lifecycle carries on from there: a client that stops waiting, a publisher
that dies, restarts or leaves, a poll that ends before it returned the task, a stream
past its memory cap. What this gives up: a process that dies between answering and the
write loses the record of an answered request (never an answer), and a task in flight
is seen only by this process (GET /api/v1/tasks/{id} elsewhere says 404 until it ends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from natrelay.service.context import Context
from natrelay.signals import Listener
from natrelay.store import (
    Chunk,
    ConditionFailedError,
    LlmRecord,
    NewTask,
    Queued,
    SameResultError,
    SessionRecord,
    StreamRead,
    TaskRecord,
    result_hash,
)
from natrelay.wire import LlmStatus, TaskKind, TaskState

log = logging.getLogger("natrelay.service")

# A handed stream keeps its chunks in memory until it ends; past this it spills.
MAX_HANDED_CHUNK_BYTES = 8 * 1024 * 1024


def pool_key(llm: str) -> str:
    """The in-process signal key of the polls waiting for a pool's tasks."""
    return f"pool:{llm}"


def task_key(task_id: str) -> str:
    """The in-process signal key of a task's waiters (as service.endings says it)."""
    return f"task:{task_id}"


@dataclass(eq=False)
class Offer:
    """A poll of this process that takes tasks handed to it while it waits idle."""

    session: SessionRecord
    slots: dict[str, int]
    listener: Listener
    idle: bool = False
    mailbox: list[TaskRecord] = field(default_factory=list)

    def take(self) -> list[TaskRecord]:
        out, self.mailbox = self.mailbox, []
        return out


@dataclass(eq=False)
class Handed:
    task: TaskRecord
    request: bytes
    chunks: dict[int, Chunk] = field(default_factory=dict)
    chunk_bytes: int = 0
    # The client's key has a concurrency or token limit: its usage is recorded before the
    # answer goes out, so the client's next request sees it.
    settle_first: bool = False
    # Set while its record is being written (then the durable path owns it).
    leaving: asyncio.Event | None = None


class EmptyQueues:
    """Pools whose queue a poll of this process just found empty, and found so since no
    task was queued for them here (no notification on the pool's key): the next poll need
    not look again. Another process's writes are not heard of, so the memory is trusted
    only as long as an idle poll's slowest re-check (poll_max_interval_seconds); never
    without in-process signals (Lambda)."""

    def __init__(self, ctx: Context) -> None:
        self.queues = ctx.stores.queues
        self.signals = ctx.signals
        self.enabled = ctx.signals.enabled
        self.ttl = ctx.settings.poll_max_interval_seconds
        self._seen: dict[str, tuple[int, float]] = {}

    async def pending(self, name: str, limit: int) -> list[Queued]:
        """What the pool's queue index lists, oldest first (nothing, and no Query, while
        the pool is known empty)."""
        key = pool_key(name)
        seen = self._seen.get(key)
        seq = self.signals.seq(key)
        if seen is not None and seen[0] == seq and time.monotonic() - seen[1] < self.ttl:
            return []
        mark = (seq, time.monotonic())  # before the Query: a task queued during it counts
        queued = await self.queues.pending(name, limit)
        if not queued and self.enabled:
            self._seen[key] = mark
        return queued


def _refused(handed: Handed, session_id: str, key: str) -> None:
    task = handed.task
    if task.claimed_by != session_id or task.claimed_key != key or task.state.done:
        raise ConditionFailedError(f"task {task.id} is not claimed by {session_id}", record=task)


class Handoff:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.enabled = ctx.settings.fast_path and ctx.signals.enabled
        self.stores = ctx.stores
        self.signals = ctx.signals
        self.clock = ctx.clock
        # Idle polls by pool, longest waiting first (a dict used as an ordered set).
        self._offers: defaultdict[str, dict[Offer, None]] = defaultdict(dict)
        self._tasks: dict[str, Handed] = {}

    # --- the poll's side ---------------------------------------------------------------

    @contextmanager
    def offering(
        self, session: SessionRecord, slots: dict[str, int], listener: Listener
    ) -> Iterator[Offer]:
        """Offer this poll for the pools it may take tasks of (while `offer.idle`)."""
        offer = Offer(session, slots, listener)
        names = [n for n, free in slots.items() if free > 0] if self.enabled else []
        for name in names:
            self._offers[name][offer] = None
        try:
            yield offer
        finally:
            offer.idle = False
            for name in names:
                offers = self._offers.get(name)
                if offers is not None:
                    offers.pop(offer, None)
                    if not offers:
                        del self._offers[name]

    def offers(self) -> list[Offer]:
        """The polls of this process on offer now (each once)."""
        return list(dict.fromkeys(o for offers in self._offers.values() for o in offers))

    def _taker(self, row: LlmRecord) -> Offer | None:
        member_ok = {
            sid
            for sid, m in row.members.items()
            if m.status is LlmStatus.ACTIVE and m.alive(self.clock(), self.ctx.liveness.timeout)
        }
        for offer in self._offers.get(row.name, ()):
            s = offer.session
            if (
                offer.idle
                and offer.slots.get(row.name, 0) > 0
                and s.id in member_ok
                and s.statuses.get(row.name) is not LlmStatus.HIBERNATING
            ):
                return offer
        return None

    def can_take(self, row: LlmRecord) -> bool:
        """Whether an idle poll of this process would take a request for the row now."""
        return self.enabled and self._taker(row) is not None

    def hand(
        self, row: LlmRecord, new: NewTask, *, settle_first: bool = False
    ) -> TaskRecord | None:
        """Hand the task claimed to an idle poll (None: none can take it now)."""
        offer = self._taker(row) if self.enabled and new.kind is TaskKind.INFER else None
        if offer is None:
            return None
        session, now = offer.session, self.clock()
        request = new.request or b""
        task = TaskRecord(
            id=new.id,
            kind=new.kind,
            llm=new.llm,
            session_id=session.id,
            state=TaskState.CLAIMED,
            created_at=new.created_at,
            lease_seconds=new.lease_seconds,
            updated_at=now,
            stream=new.stream,
            request_size=len(request),
            request=request,
            claimed_by=session.id,
            claimed_key=session.owner or "",
            claimed_at=now,
            claimed_generation=session.generation,
            lease_until=now + new.lease_seconds,
            attempts=1,
            client_key=new.client_key,
            usage_day=new.usage_day,
            slot=new.slot,
            expires_at=new.expires_at,
        )
        self._tasks[task.id] = Handed(task, request, settle_first=settle_first)
        offer.slots[row.name] -= 1
        offer.mailbox.append(task)
        offers = self._offers[row.name]
        offers.pop(offer)
        offers[offer] = None  # to the back of the line: the pool's polls take turns
        offer.listener.set(None)
        return task

    # --- what the relay knows of a handed task ------------------------------------------

    def holds(self, task_id: str) -> bool:
        return task_id in self._tasks

    def get(self, task_id: str) -> TaskRecord | None:
        handed = self._tasks.get(task_id)
        return handed.task if handed is not None else None

    def read_stream(self, task_id: str, after_seq: int) -> StreamRead | None:
        """What a stream reader would read from DynamoDB (None: not handed here)."""
        handed = self._tasks.get(task_id)
        if handed is None:
            return None
        chunks = [c for seq, c in sorted(handed.chunks.items()) if seq > after_seq]
        return StreamRead(chunks=chunks, task=handed.task, complete=True)

    async def _here(self, task_id: str) -> Handed | None:
        """The handed task, once no write of it is under way (None: the durable path
        owns it, or it was never handed here)."""
        handed = self._tasks.get(task_id)
        if handed is not None and handed.leaving is not None:
            await handed.leaving.wait()
            return None
        return handed

    # --- the publisher's side ----------------------------------------------------------

    async def request(self, task_id: str, session_id: str, key: str) -> bytes | None:
        handed = await self._here(task_id)
        if handed is None:
            return None
        if handed.task.claimed_by != session_id or handed.task.claimed_key != key:
            raise ConditionFailedError(f"task {task_id} is not claimed by {session_id}")
        return handed.request

    async def chunk(self, task_id: str, session_id: str, key: str, chunk: Chunk) -> bool | None:
        """Keep a chunk batch of a handed task: True, or False if that seq came with other
        content (None: not handed here). A lost condition raises ConditionFailedError
        with the task as `record`, as the task store does."""
        handed = await self._here(task_id)
        if handed is None:
            return None
        _refused(handed, session_id, key)
        seen = handed.chunks.get(chunk.seq)
        if seen is not None:
            return seen.data == chunk.data
        handed.chunks[chunk.seq] = chunk
        handed.chunk_bytes += len(chunk.data)
        if not handed.task.sent_any:
            handed.task = replace(handed.task, sent_any=True, updated_at=self.clock())
        self.signals.notify(task_key(task_id), chunk, len(chunk.data))
        if handed.chunk_bytes > MAX_HANDED_CHUNK_BYTES:
            await self.spill(task_id)
        return True

    async def finish(
        self,
        task_id: str,
        session_id: str,
        key: str,
        *,
        status: int,
        body: bytes | None,
        error: dict[str, Any] | None,
        chunk_count: int,
        settle: Callable[[TaskRecord], Awaitable[None]],
    ) -> TaskRecord | None:
        """Finish a handed task, answer its waiter, then write its record and `settle`
        its usage (first, when its key has limits); None: not handed here. The same
        result again raises SameResultError."""
        handed = await self._here(task_id)
        if handed is None:
            return None
        digest = result_hash(status, body, error)
        task = handed.task
        if task.state.done and task.result_hash == digest and task.claimed_by == session_id:
            raise SameResultError(f"task {task_id} holds this result", record=task)
        _refused(handed, session_id, key)
        now = self.clock()
        handed.task = replace(
            task,
            state=TaskState.FAILED if error else TaskState.COMPLETED,
            status=status,
            error=error,
            chunk_count=chunk_count,
            result=body,
            result_size=len(body) if body is not None else 0,
            result_hash=digest,
            updated_at=now,
            lease_until=None,
            expires_at=self.ctx.result_expiry(now),
        )
        done = handed.task
        if handed.settle_first:
            await settle(done)
        self.signals.notify(task_key(task_id), done)  # the client, then the record
        await self._write(handed)
        if not handed.settle_first:
            await settle(done)
        return done

    async def end(self, task_id: str, state: TaskState, **fields: Any) -> TaskRecord | None:
        """End a handed task that is not done (cancelled, failed) and write its record;
        None if it is not handed here or is done already."""
        handed = await self._here(task_id)
        if handed is None or handed.task.state.done:
            return None
        now = self.clock()
        handed.task = replace(
            handed.task,
            state=state,
            updated_at=now,
            lease_until=None,
            expires_at=self.ctx.result_expiry(now),
            **fields,
        )
        self.signals.notify(task_key(task_id), handed.task)
        await self._write(handed)
        return handed.task

    # --- leaving the fast path ---------------------------------------------------------

    async def spill(self, task_id: str) -> TaskRecord | None:
        """Write a handed task to DynamoDB as it stands; from then on the durable path
        owns it. The task as written (None: not handed here, or done: its record is on
        its way)."""
        handed = await self._here(task_id)
        if handed is None or handed.task.state.done:
            return None
        await self._write(handed)
        return handed.task

    async def spill_session(self, session_id: str) -> list[TaskRecord]:
        """Spill every unfinished task handed to this session."""
        ids = [
            tid
            for tid, h in self._tasks.items()
            if h.task.session_id == session_id and not h.task.state.done
        ]
        spilled = [await self.spill(tid) for tid in ids]
        return [t for t in spilled if t is not None]

    async def spill_expired(self, now: float) -> int:
        """Spill every handed task past its lease (its poll's answer lost on the way, or
        a long task): the sweep's lease rules take it from there. How many it spilled."""
        if not self._tasks:
            return 0
        ids = [
            tid
            for tid, h in self._tasks.items()
            if h.task.lease_until is not None and now > h.task.lease_until
        ]
        spilled = [await self.spill(tid) for tid in ids]
        return sum(t is not None for t in spilled)

    async def _write(self, handed: Handed) -> None:
        task = handed.task
        handed.leaving = asyncio.Event()
        try:
            chunks = [c for _, c in sorted(handed.chunks.items())]
            await self.stores.handed.put(task, handed.request, chunks, task.result)
        except Exception:
            # The client has (or will get) its answer; only the record is lost.
            log.exception("the record of task %s could not be written", task.id)
        finally:
            self._tasks.pop(task.id, None)
            handed.leaving.set()
