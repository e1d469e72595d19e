"""Tasks handed in memory (the fast path): what the relay and the publisher's posts do
with them until they end or leave the fast path (spill), and their records, written in
batches behind the answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from natrelay.service.batching import Batch
from natrelay.service.context import Context
from natrelay.store import (
    Chunk,
    ConditionFailedError,
    SameResultError,
    StreamRead,
    TaskRecord,
    result_hash,
)
from natrelay.wire import TaskState

log = logging.getLogger("natrelay.service")

# A handed stream keeps its chunks in memory until it ends; past this it spills.
MAX_HANDED_CHUNK_BYTES = 8 * 1024 * 1024
# Finished tasks' records per BatchWriteItem call (DynamoDB's most).
RECORDS_PER_BATCH = 25

Settle = Callable[[TaskRecord, bool], Awaitable[None]]


def pool_key(llm: str) -> str:
    """The in-process signal key of the polls waiting for a pool's tasks."""
    return f"pool:{llm}"


def task_key(task_id: str) -> str:
    """The in-process signal key of a task's waiters (as service.endings says it)."""
    return f"task:{task_id}"


@dataclass(eq=False)
class Handed:
    task: TaskRecord
    request: bytes
    chunks: dict[int, Chunk] = field(default_factory=dict)
    chunk_bytes: int = 0
    # The client's key has a concurrency or token limit: its usage is recorded before the
    # answer goes out, so the client's next request sees it.
    settle_first: bool = False
    # Set once its record is on its way to DynamoDB (queued in a batch, or a spill):
    # the durable path owns it when the event is set.
    leaving: asyncio.Event | None = None


def _refused(handed: Handed, session_id: str, key: str) -> None:
    task = handed.task
    if task.claimed_by != session_id or task.claimed_key != key or task.state.done:
        raise ConditionFailedError(f"task {task.id} is not claimed by {session_id}", record=task)


class HandedTasks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stores = ctx.stores
        self.signals = ctx.signals
        self.clock = ctx.clock
        self._tasks: dict[str, Handed] = {}
        self._records: Batch[Handed] = Batch(
            "records of answered tasks",
            ctx.settings.record_batch_seconds,
            self._write_records,
            size=RECORDS_PER_BATCH,
        )
        self._jobs: set[asyncio.Future[None]] = set()

    def _later(self, job: Awaitable[None]) -> None:
        future = asyncio.ensure_future(job)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)

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

    async def chunk(
        self, task_id: str, session_id: str, key: str, chunk: Chunk, relayed: int = 0
    ) -> bool | None:
        """Keep a chunk batch of a handed task (`relayed` bytes of text): True, or False
        if that seq came with other content (None: not handed here). A lost condition
        raises ConditionFailedError with the task as `record`, as the task store does."""
        handed = await self._here(task_id)
        if handed is None:
            return None
        _refused(handed, session_id, key)
        seen = handed.chunks.get(chunk.seq)
        if seen is not None:
            return seen.data == chunk.data
        handed.chunks[chunk.seq] = chunk
        handed.chunk_bytes += len(chunk.data)
        handed.task = replace(
            handed.task,
            sent_any=True,
            updated_at=self.clock(),
            relayed=handed.task.relayed + relayed,
        )
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
        settle: Settle,
    ) -> TaskRecord | None:
        """Finish a handed task, answer its waiter, then `settle` its usage (before the
        answer when its key has limits; else `later`, added up with others') and write
        its record in the next batch; None: not handed here. The same result again
        raises SameResultError."""
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
            await settle(done, False)
        self.signals.notify(task_key(task_id), done)  # the client, then the record
        self._record(handed)
        if not handed.settle_first:
            await settle(done, True)
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
        self._record(handed)
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

    def _record(self, handed: Handed) -> None:
        """Write an ended task's record in the next batch (the durable path owns it once
        it is written; GET finds it here until then)."""
        handed.leaving = asyncio.Event()
        self._records.add(handed)

    async def _write_records(self, records: list[Handed]) -> None:
        try:
            await self.stores.handed.put_many(
                [
                    (h.task, h.request, [c for _, c in sorted(h.chunks.items())], h.task.result)
                    for h in records
                ]
            )
        finally:
            for handed in records:
                self._tasks.pop(handed.task.id, None)
                if handed.leaving is not None:
                    handed.leaving.set()

    async def drain(self) -> None:
        """Write every record this process holds (it is stopping)."""
        await self._records.drain()
        while self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)

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
