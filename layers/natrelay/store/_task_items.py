"""The items of a task's partition (pk `task#<id>`): keys, codec, large payloads.

sk `m` is the task, `c#<seq>` its stream chunks, `q#<n>` the parts of a request too
large for one item, `r#<result hash prefix>#<n>` those of a result: the task item names
the parts of the result it accepted (`resultParts`), so parts a refused post wrote are
never read. Chunks sort before `m`, so one Query reads
the new chunks and the task's state together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from natrelay.store._dynamo import (
    NOT_EXISTS,
    Item,
    condition,
    decode,
    encode,
    items,
    put_all,
    split,
    values,
)
from natrelay.store.records import NewTask, TaskRecord
from natrelay.wire import Endpoint, Priority, TaskKind, TaskState

# Payloads up to this size live in the task item; larger ones are split into parts.
INLINE_LIMIT = 200 * 1024
PART_SIZE = 350 * 1024
LEASE_SHARD = "lease"
WAKE_PRIORITY = 86_400.0
STATE_NAMES = {"#state": "state"}


def task_pk(task_id: str) -> dict[str, Any]:
    return {"S": f"task#{task_id}"}


def task_key(task_id: str, sk: str = "m") -> dict[str, Any]:
    return {"pk": task_pk(task_id), "sk": {"S": sk}}


def seq_key(seq: int) -> str:
    return f"c#{seq:010d}"


def task_record(item: Item) -> TaskRecord:
    return TaskRecord(
        id=item["pk"].removeprefix("task#"),
        kind=TaskKind(item["kind"]),
        llm=item["llm"],
        session_id=item.get("sessionId"),
        state=TaskState(item["state"]),
        created_at=item["createdAt"],
        lease_seconds=item.get("leaseSeconds", 60),
        updated_at=item.get("updatedAt"),
        stream=bool(item.get("stream", False)),
        wake_id=item.get("wakeId"),
        request_size=int(item.get("requestSize", 0)),
        endpoint=item.get("endpoint", Endpoint.CHAT.value),
        agent=item.get("agent"),
        request=item.get("request"),
        claimed_by=item.get("claimedBy"),
        claimed_key=item.get("claimedKey"),
        claimed_at=item.get("claimedAt"),
        claimed_generation=item.get("claimedGeneration"),
        lease_until=item.get("leaseUntil"),
        attempts=int(item.get("attempts", 0)),
        sent_any=bool(item.get("sentAny", False)),
        chunk_count=int(item.get("chunkCount", 0)),
        status=item.get("status"),
        result_size=int(item.get("resultSize", 0)),
        result=item.get("result"),
        result_hash=item.get("resultHash"),
        result_parts=item.get("resultParts"),
        error=item.get("error"),
        client_key=item.get("clientKey"),
        usage_day=item.get("usageDay"),
        slot=item.get("slot"),
        expires_at=item.get("expiresAt"),
        target_session=item.get("targetSession"),
        wake_target=item.get("wakeTarget"),
        reserved=int(item.get("reserved", 0)),
        relayed=int(item.get("relayed", 0)),
        lost_by=item.get("lostBy"),
        priority=Priority(item.get("priority", Priority.INTERACTIVE.value)),
        queue_order=item.get("queueOrder"),
        affinity=item.get("affinity"),
        prefer=item.get("prefer"),
        prefer_until=item.get("preferUntil"),
        received_at=item.get("receivedAt"),
        asked_at=item.get("askedAt"),
        first_token_at=item.get("firstTokenAt"),
        traceparent=item.get("traceparent"),
    )


def pool_queue(llm: str) -> str:
    """The `queue` value of the tasks waiting for the pool of `llm`."""
    return f"pool#{llm}"


@dataclass(frozen=True)
class Queued:
    """A task waiting in a pool's queue, as the byPool index lists it."""

    id: str
    kind: TaskKind
    order: float
    target_session: str | None = None
    wake_target: str | None = None
    priority: Priority = Priority.INTERACTIVE
    created_at: float | None = None
    prefer: str | None = None
    prefer_until: float | None = None

    @property
    def queued_at(self) -> float:
        """When it was queued (its order, for an item written before classes)."""
        return self.created_at if self.created_at is not None else self.order


def queued_entry(item: Item) -> Queued:
    return Queued(
        id=item["pk"].removeprefix("task#"),
        kind=TaskKind(item.get("kind", TaskKind.INFER.value)),
        order=float(item.get("queueOrder", 0)),
        target_session=item.get("targetSession"),
        wake_target=item.get("wakeTarget"),
        priority=Priority(item.get("priority", Priority.INTERACTIVE.value)),
        created_at=item.get("createdAt"),
        prefer=item.get("prefer"),
        prefer_until=item.get("preferUntil"),
    )


def queue_fields(task: NewTask | TaskRecord) -> Item:
    """The attributes that place a task in its pool's queue: its order (by default when
    it was created; wakes jump the queue: the inferences queued behind them wait for
    them), class and affinity (interactive and no affinity are left out)."""
    order = task.queue_order
    if order is None:
        order = task.created_at - (WAKE_PRIORITY if task.kind is TaskKind.WAKE else 0)
    return {
        "queueOrder": order,
        "priority": None if task.priority is Priority.INTERACTIVE else task.priority.value,
        "affinity": task.affinity,
        "prefer": task.prefer,
        "preferUntil": task.prefer_until,
    }


def result_parts(digest: str) -> str:
    """The sk prefix of the parts of the result whose hash is `digest`."""
    return f"r#{digest[:16]}"


def result_hash(status: int, body: bytes | None, error: dict[str, Any] | None) -> str:
    digest = hashlib.sha256(f"{status}|{error!r}|".encode())
    digest.update(body or b"")
    return digest.hexdigest()


def write_parts(
    client: Any, table: str, task_id: str, prefix: str, *, data: bytes, expires_at: float
) -> None:
    """Store `data` as parts `<prefix>#<n>` of the task's partition."""
    parts = split(data, PART_SIZE)
    put_all(
        client,
        table,
        [
            {
                "pk": f"task#{task_id}",
                "sk": f"{prefix}#{i:04d}",
                "data": part,
                "expiresAt": int(expires_at),
            }
            for i, part in enumerate(parts)
        ],
    )


def read_parts(client: Any, table: str, task_id: str, prefix: str) -> bytes:
    parts = items(
        client,
        "query",
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues=values(pk=f"task#{task_id}", prefix=f"{prefix}#"),
        ConsistentRead=True,
    )
    return b"".join(part["data"] for part in parts)


def force_end(
    client: Any,
    table: str,
    task_id: str,
    state: TaskState,
    *,
    status: int,
    error: dict[str, Any],
    now: float,
    expires_at: float,
    only_if: str = "",
    **cond_values: Any,
) -> TaskRecord:
    """End a task that is not done yet (and meets `only_if`) in `state`;
    ConditionFailedError otherwise."""
    cond = "#state IN (:pending, :claimed)" + (f" AND {only_if}" if only_if else "")
    with condition(f"task {task_id} already done"):
        raw = client.update_item(
            TableName=table,
            Key=task_key(task_id),
            UpdateExpression="SET #state = :new, #error = :error, updatedAt = :now, "
            "expiresAt = :exp, #status = :status REMOVE #queue, leaseShard",
            ConditionExpression=cond,
            ExpressionAttributeNames={
                **STATE_NAMES,
                "#queue": "queue",
                "#error": "error",
                "#status": "status",
            },
            ExpressionAttributeValues=values(
                pending=TaskState.PENDING.value,
                claimed=TaskState.CLAIMED.value,
                new=state.value,
                error=error,
                now=now,
                exp=int(expires_at),
                status=status,
                **cond_values,
            ),
            ReturnValues="ALL_NEW",
        )["Attributes"]
    return task_record(decode(raw))


def put_new_task(client: Any, table: str, task_id: str, item: Item) -> None:
    """Write a task's item; ConditionFailedError if the task exists already."""
    with condition(f"task {task_id} exists"):
        client.put_item(
            TableName=table,
            Item=encode(item),
            ConditionExpression=NOT_EXISTS,
            ExpressionAttributeNames={"#pk": "pk"},
        )
