"""The memory tier of the task storage (server mode: the fast path).

A task handed to a poll of this process (TaskStorage.put_claimed) lives here, in
memory: the publisher's request fetch, chunks and result and the client's reads are
served from it, and its record (the task item with its request, result and chunks) is
written behind its answer, in batches. What this tier does not hold, it passes to the
durable tier behind it.

A task leaves memory ("spills": its item is written as it stands and the durable
lifecycle carries on from there) when its client stops waiting, when it goes back to its
pool's queue (one write: the item, pending), when it is read past its lease, and when its
stream passes MAX_HELD_CHUNK_BYTES. What this gives up: a process that dies between the
answer and the write loses the record of an answered request (never an answer), and a
task in flight is seen only by this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from natrelay.batching import Batch
from natrelay.store._task_items import result_hash
from natrelay.store.errors import ChunkDiffersError, ConditionFailedError, SameResultError
from natrelay.store.records import (
    Chunk,
    Holder,
    IdempotencyRecord,
    NewTask,
    SessionRecord,
    StreamRead,
    TaskRecord,
)
from natrelay.store.task_storage import TaskStorage, claimed_task
from natrelay.store.whole_tasks import DynamoWholeTaskStore
from natrelay.wire import TaskState

log = logging.getLogger("natrelay.store")

# A stream held in memory keeps its chunks until it ends; past this it spills.
MAX_HELD_CHUNK_BYTES = 8 * 1024 * 1024
# Finished tasks' records per BatchWriteItem call (DynamoDB's most).
RECORDS_PER_BATCH = 25


@dataclass(eq=False)
class Held:
    task: TaskRecord
    chunks: dict[int, Chunk] = field(default_factory=dict)
    chunk_bytes: int = 0
    # Set once its item is on its way to DynamoDB (queued in a batch, or a spill): the
    # durable tier owns the task when the event is set.
    leaving: asyncio.Event | None = None

    def whole(self) -> tuple[TaskRecord, list[Chunk]]:
        return self.task, [c for _, c in sorted(self.chunks.items())]


def _not_held(task: TaskRecord, holder: Holder) -> ConditionFailedError:
    return ConditionFailedError(
        f"task {task.id} is not claimed by {holder.session_id}", record=task
    )


class MemoryTasks(TaskStorage):
    """TaskStorage in this process's memory, in front of `durable`."""

    def __init__(
        self,
        durable: TaskStorage,
        whole: DynamoWholeTaskStore,
        clock: Callable[[], float],
        batch_seconds: float,
    ) -> None:
        self._durable = durable
        self._whole = whole
        self._clock = clock
        self._tasks: dict[str, Held] = {}
        self._records: Batch[Held] = Batch(
            "records of answered tasks", batch_seconds, self._write_records, size=RECORDS_PER_BATCH
        )

    def holds(self, task_id: str) -> bool:
        """Whether the task is in this process's memory (its item may be on its way)."""
        return task_id in self._tasks

    async def _held(self, task_id: str) -> Held | None:
        """The task held here, once no write of it is under way (None: the durable tier
        owns it, or it was never here)."""
        held = self._tasks.get(task_id)
        if held is not None and held.leaving is not None:
            await held.leaving.wait()
            return None
        return held

    async def _current(self, task_id: str) -> Held | None:
        """The task held here as a reader sees it (its item may be on its way); past its
        lease and not done, it is written out first and the durable tier has it."""
        held = self._tasks.get(task_id)
        if held is None or held.leaving is not None:
            return held
        task = held.task
        if (
            not task.state.done
            and task.lease_until is not None
            and self._clock() > task.lease_until
        ):
            await self._write(held)
            return None
        return held

    # --- a task comes in -------------------------------------------------------------

    async def put(
        self, task: NewTask, once: IdempotencyRecord | None = None, replacing: str | None = None
    ) -> None:
        await self._durable.put(task, once, replacing)

    async def put_claimed(self, task: NewTask, session: SessionRecord, now: float) -> TaskRecord:
        """Hold the task claimed by `session`, in memory (no write)."""
        claimed = replace(claimed_task(task, session, now), usage_later=not task.limited)
        self._tasks[claimed.id] = Held(claimed)
        return claimed

    # --- reading ---------------------------------------------------------------------

    async def get(self, task_id: str, now: float) -> TaskRecord | None:
        held = await self._current(task_id)
        return held.task if held is not None else await self._durable.get(task_id, now)

    async def get_many(self, task_ids: list[str], now: float) -> dict[str, TaskRecord]:
        found = self.held(task_ids)
        rest = [t for t in task_ids if t not in found]
        return found | (await self._durable.get_many(rest, now) if rest else {})

    def held(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        return {t: self._tasks[t].task for t in task_ids if t in self._tasks}

    async def request(self, task: TaskRecord) -> bytes:
        return await self._durable.request(task)

    async def result(self, task: TaskRecord) -> bytes | None:
        return await self._durable.result(task)

    async def read_stream(self, task_id: str, after_seq: int, now: float) -> StreamRead:
        held = await self._current(task_id)
        if held is None:
            return await self._durable.read_stream(task_id, after_seq, now)
        chunks = [c for seq, c in sorted(held.chunks.items()) if seq > after_seq]
        return StreamRead(chunks=chunks, task=held.task, complete=True)

    # --- the publisher's side ----------------------------------------------------------

    async def claim(
        self,
        task_id: str,
        session_id: str,
        *,
        key: str,
        generation: int,
        now: float,
        llms: tuple[str, ...] | None = None,
        asked: float | None = None,
    ) -> TaskRecord:
        # a task held here is claimed already: only pending tasks are claimed
        return await self._durable.claim(
            task_id, session_id, key=key, generation=generation, now=now, llms=llms, asked=asked
        )

    async def add_chunk(
        self,
        task_id: str,
        holder: Holder,
        chunk: Chunk,
        *,
        now: float,
        expires_at: float,
        relayed: int = 0,
    ) -> None:
        held = await self._held(task_id)
        if held is None:
            await self._durable.add_chunk(
                task_id, holder, chunk, now=now, expires_at=expires_at, relayed=relayed
            )
            return
        if not held.task.held_by(holder):
            raise _not_held(held.task, holder)
        seen = held.chunks.get(chunk.seq)
        if seen is not None:
            if seen.data != chunk.data:
                raise ChunkDiffersError(f"chunk {chunk.seq} of task {task_id} differs")
            return
        held.chunks[chunk.seq] = chunk
        held.chunk_bytes += len(chunk.data)
        task = held.task
        held.task = replace(
            task,
            sent_any=True,
            lease_until=now + task.lease_seconds,
            updated_at=now,
            relayed=task.relayed + relayed,
            first_token_at=task.first_token_at or now,
        )
        if held.chunk_bytes > MAX_HELD_CHUNK_BYTES:
            await self._write(held)

    async def store_result(
        self,
        task_id: str,
        holder: Holder,
        *,
        state: TaskState,
        status: int,
        body: bytes | None,
        error: dict[str, Any] | None,
        chunk_count: int,
        now: float,
        expires_at: float,
    ) -> TaskRecord:
        """As the durable tier's, and the record is written in the next batch."""
        held = await self._held(task_id)
        if held is None:
            return await self._durable.store_result(
                task_id,
                holder,
                state=state,
                status=status,
                body=body,
                error=error,
                chunk_count=chunk_count,
                now=now,
                expires_at=expires_at,
            )
        digest = result_hash(status, body, error)
        task = held.task
        if task.state.done and task.result_hash == digest and task.claimed_by == holder.session_id:
            raise SameResultError(f"task {task_id} holds this result", record=task)
        if not task.held_by(holder):
            raise _not_held(task, holder)
        held.task = replace(
            task,
            state=state,
            status=status,
            error=error,
            chunk_count=chunk_count,
            result=body,
            result_size=len(body) if body is not None else 0,
            result_hash=digest,
            updated_at=now,
            lease_until=None,
            expires_at=expires_at,
        )
        self._record(held)
        return held.task

    # --- endings -----------------------------------------------------------------------

    async def end_unfinished(
        self,
        task_id: str,
        state: TaskState,
        *,
        status: int,
        error: dict[str, Any],
        now: float,
        expires_at: float,
    ) -> TaskRecord:
        held = await self._held(task_id)
        if held is None:
            return await self._durable.end_unfinished(
                task_id, state, status=status, error=error, now=now, expires_at=expires_at
            )
        if held.task.state.done:
            raise ConditionFailedError(f"task {task_id} already done", record=held.task)
        held.task = replace(
            held.task,
            state=state,
            status=status,
            error=error,
            updated_at=now,
            lease_until=None,
            expires_at=expires_at,
        )
        self._record(held)
        return held.task

    async def fail_if_pending(
        self, task_id: str, *, status: int, error: dict[str, Any], now: float, expires_at: float
    ) -> TaskRecord:
        # a task held here was claimed the moment it came: it is never pending
        return await self._durable.fail_if_pending(
            task_id, status=status, error=error, now=now, expires_at=expires_at
        )

    async def requeue_if_unsent(self, task: TaskRecord, session_id: str, now: float) -> TaskRecord:
        """As the durable tier's; held here, the one write is the task's item, pending."""
        held = await self._held(task.id)
        if held is None:
            return await self._durable.requeue_if_unsent(task, session_id, now)
        current = held.task
        unsent = current.state is TaskState.CLAIMED and not current.sent_any
        same = current.claimed_by == session_id and current.attempts == task.attempts
        if not unsent or not same:
            raise ConditionFailedError(f"task {task.id} cannot be requeued", record=current)
        held.task = replace(
            current,
            state=TaskState.PENDING,
            session_id=None,
            claimed_by=None,
            claimed_key=None,
            claimed_at=None,
            claimed_generation=None,
            lease_until=None,
            updated_at=now,
            lost_by=current.claimed_by,
            prefer=None,  # the member it was meant for did not run it: any member may now
            prefer_until=None,
        )
        await self._write(held)
        return held.task

    # --- leaving memory ----------------------------------------------------------------

    async def held_by(self, session_id: str) -> list[TaskRecord]:
        return [
            h.task
            for h in self._tasks.values()
            if h.task.session_id == session_id and not h.task.state.done and h.leaving is None
        ]

    async def spill(self, task_id: str) -> None:
        held = await self._held(task_id)
        if held is not None and not held.task.state.done:
            await self._write(held)

    async def spill_expired(self, now: float) -> int:
        if not self._tasks:
            return 0
        expired = [
            h
            for h in self._tasks.values()
            if h.task.lease_until is not None and now > h.task.lease_until
        ]
        spilled = 0
        for held in expired:
            if held.leaving is None:  # (a write of it may have begun meanwhile)
                await self._write(held)
                spilled += 1
        return spilled

    async def drain(self) -> None:
        await self._records.drain()

    def _record(self, held: Held) -> None:
        """Write an ended task's record in the next batch (the durable tier owns it once
        it is written; reads find it here until then)."""
        held.leaving = asyncio.Event()
        self._records.add(held)

    async def _write_records(self, records: list[Held]) -> None:
        try:
            await self._whole.put_many([h.whole() for h in records])
        finally:
            for held in records:
                self._forget(held)

    async def _write(self, held: Held) -> None:
        """Write the task's item as it stands, now; from then on the durable tier owns it."""
        held.leaving = asyncio.Event()
        try:
            await self._whole.put(*held.whole())
        except Exception:
            # The client has (or will get) its answer; only the record is lost.
            log.exception("the record of task %s could not be written", held.task.id)
        finally:
            self._forget(held)

    def _forget(self, held: Held) -> None:
        if self._tasks.get(held.task.id) is held:
            del self._tasks[held.task.id]
        if held.leaving is not None:
            held.leaving.set()
