"""A task's item written whole, at once, as the task stands: the record of a task the
memory tier held (store.memory_tasks) — finished behind its answer, or still claimed or
back in its pool's queue when it leaves memory (the durable lifecycle carries on from
that item) — and a task claimed the moment it is created (TaskStorage.put_claimed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from natrelay.store._dynamo import Item, off_loop, put_all
from natrelay.store._task_items import (
    INLINE_LIMIT,
    LEASE_SHARD,
    pool_queue,
    put_new_task,
    queue_fields,
    result_parts,
    seq_key,
    write_parts,
)
from natrelay.store.records import Chunk, TaskRecord
from natrelay.wire import Endpoint, TaskState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# A task and its stream's chunks (its request and result are on the record).
WholeTask = tuple[TaskRecord, Sequence[Chunk]]
# Records up to this size (request and result together) go in batches.
BATCH_ITEM_LIMIT = 64 * 1024


def _item(task: TaskRecord) -> Item:
    """The task item (sk `m`) for a record, as the task store writes and reads it."""
    item: Item = {
        "pk": f"task#{task.id}",
        "sk": "m",
        "kind": task.kind.value,
        "llm": task.llm,
        "state": task.state.value,
        "sessionId": task.session_id,
        "createdAt": task.created_at,
        # where it sorts in its pool's queue, should it go back there
        **queue_fields(task),
        "updatedAt": task.updated_at,
        "leaseSeconds": task.lease_seconds,
        "stream": task.stream,
        # chat, the API of tasks before there were others, is left out (as the task store)
        "endpoint": None if task.endpoint == Endpoint.CHAT else task.endpoint,
        "agent": task.agent,
        "wakeId": task.wake_id,
        "claimedBy": task.claimed_by,
        "claimedKey": task.claimed_key,
        "claimedAt": task.claimed_at,
        "claimedGeneration": task.claimed_generation,
        "leaseUntil": task.lease_until,
        "attempts": task.attempts,
        "sentAny": True if task.sent_any else None,
        "chunkCount": task.chunk_count,
        "status": task.status,
        "resultSize": task.result_size,
        "resultHash": task.result_hash,
        "error": task.error,
        "clientKey": task.client_key,
        "usageDay": task.usage_day,
        "slot": task.slot,
        "reserved": task.reserved or None,
        "relayed": task.relayed or None,
        "expiresAt": int(task.expires_at) if task.expires_at is not None else None,
        "wakeTarget": task.wake_target,
        "lostBy": task.lost_by,
        "receivedAt": task.received_at,
        "askedAt": task.asked_at,
        "firstTokenAt": task.first_token_at,
        "traceparent": task.traceparent,
    }
    if task.state is TaskState.CLAIMED:
        item["leaseShard"] = LEASE_SHARD  # the sweep watches its lease from now on
    elif task.state is TaskState.PENDING:
        item["queue"] = pool_queue(task.llm)  # back in its pool's queue
    return {k: v for k, v in item.items() if v is not None}


class DynamoWholeTaskStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @off_loop
    def put(self, task: TaskRecord, chunks: Sequence[Chunk] = ()) -> None:
        """Write the task item with its request, result and chunks (one PutItem when they
        fit in it; chunks and large payloads in batches before it). ConditionFailedError
        if the task item exists already."""
        put_new_task(self._client, self._table, task.id, self._whole(task, chunks))

    @off_loop
    def put_many(self, records: Sequence[WholeTask]) -> None:
        """Write the records of finished tasks, 25 to a BatchWriteItem call (small ones;
        others one by one, as `put`). Unconditional: a task's record is written once, by
        the process that held it (its id is new; a task that left memory before it
        finished is not among them)."""
        small: list[Item] = []
        for task, chunks in records:
            size = len(task.request or b"") + len(task.result or b"")
            if chunks or size > BATCH_ITEM_LIMIT:
                put_new_task(self._client, self._table, task.id, self._whole(task, chunks))
            else:
                small.append(self._whole(task, ()))
        put_all(self._client, self._table, small)

    def _whole(self, task: TaskRecord, chunks: Sequence[Chunk]) -> Item:
        """The task item, once its chunks and large payloads are written."""
        expires = task.expires_at or 0.0
        request, result = task.request or b"", task.result
        item = _item(task)
        item["requestSize"] = len(request)
        if len(request) <= INLINE_LIMIT:
            item["request"] = request
        else:
            write_parts(self._client, self._table, task.id, "q", data=request, expires_at=expires)
        if result is not None and len(result) <= INLINE_LIMIT:
            item["result"] = result
        elif result is not None and task.result_hash:
            parts = result_parts(task.result_hash)
            item["resultParts"] = parts
            write_parts(self._client, self._table, task.id, parts, data=result, expires_at=expires)
        put_all(
            self._client,
            self._table,
            [
                {
                    "pk": f"task#{task.id}",
                    "sk": seq_key(c.seq),
                    "data": c.data,
                    "expiresAt": int(expires),
                }
                for c in chunks
            ],
        )
        return item
