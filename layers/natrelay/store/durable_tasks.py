"""The durable tier of the task storage: every task in DynamoDB, through the stores of
the task's partition (the task item, its chunks, its lease, a task written whole)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from natrelay.store.chunks import DynamoChunkStore
from natrelay.store.leases import DynamoLeaseStore
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
from natrelay.store.tasks import DynamoTaskStore
from natrelay.store.whole_tasks import DynamoWholeTaskStore
from natrelay.wire import TaskState


class DurableTasks(TaskStorage):
    """TaskStorage in DynamoDB: what any process reads and writes alike."""

    def __init__(
        self,
        tasks: DynamoTaskStore,
        chunks: DynamoChunkStore,
        leases: DynamoLeaseStore,
        whole: DynamoWholeTaskStore,
    ) -> None:
        self._tasks = tasks
        self._chunks = chunks
        self._leases = leases
        self._whole = whole

    async def put(
        self, task: NewTask, once: IdempotencyRecord | None = None, replacing: str | None = None
    ) -> None:
        await self._tasks.put(task, once, replacing)

    async def put_claimed(self, task: NewTask, session: SessionRecord, now: float) -> TaskRecord:
        claimed = claimed_task(task, session, now)
        await self._whole.put(claimed)
        return claimed

    async def get(self, task_id: str, now: float) -> TaskRecord | None:
        return await self._tasks.get(task_id, now)

    async def get_many(self, task_ids: list[str], now: float) -> dict[str, TaskRecord]:
        return await self._tasks.get_many(task_ids, now)

    def held(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        return {}

    async def request(self, task: TaskRecord) -> bytes:
        return await self._tasks.request(task)

    async def result(self, task: TaskRecord) -> bytes | None:
        return await self._tasks.result(task)

    async def read_stream(self, task_id: str, after_seq: int, now: float) -> StreamRead:
        return await self._chunks.read_stream(task_id, after_seq, now)

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
        return await self._tasks.claim(
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
        await self._tasks.mark_sent(task_id, holder.session_id, holder.key, now, relayed)
        await self._chunks.put_chunk(task_id, chunk.seq, chunk.data, expires_at)

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
        return await self._tasks.store_result(
            task_id,
            holder.session_id,
            key=holder.key,
            state=state,
            status=status,
            body=body,
            error=error,
            chunk_count=chunk_count,
            now=now,
            expires_at=expires_at,
        )

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
        return await self._tasks.end_unfinished(
            task_id, state, status=status, error=error, now=now, expires_at=expires_at
        )

    async def fail_if_pending(
        self, task_id: str, *, status: int, error: dict[str, Any], now: float, expires_at: float
    ) -> TaskRecord:
        return await self._tasks.fail_if_pending(
            task_id, status=status, error=error, now=now, expires_at=expires_at
        )

    async def requeue_if_unsent(self, task: TaskRecord, session_id: str, now: float) -> TaskRecord:
        return await self._leases.requeue_if_unsent(task, session_id, now)

    async def held_by(self, session_id: str) -> list[TaskRecord]:
        return []

    async def spill(self, task_id: str) -> None:
        return None

    async def spill_expired(self, now: float) -> int:
        return 0

    async def drain(self) -> None:
        return None
