"""Tasks, their stream chunks and their large payloads in DynamoDB.

One partition per task (pk `task#<id>`): sk `m` is the task, `c#<seq>` its chunks,
`q#<n>` / `r#<n>` the parts of a request / result too large for one item. Chunks
sort before `m`, so one Query reads the new chunks and the task's state together.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.errors import (
    ConditionFailedError,
    ResultConflictError,
    TaskCancelledError,
    TaskNotClaimedError,
    TaskNotFoundError,
)
from natrelay.store._dynamo import (
    CLAIMED_BY,
    LEASE_EXPIRED,
    NOT_EXISTS,
    NOTHING_SENT,
    STATE_IS,
    Item,
    condition,
    decode,
    encode,
    is_condition_failure,
    items,
    split,
    values,
)
from natrelay.store.records import Chunk, NewTask, StreamRead, TaskRecord
from natrelay.wire import TaskKind, TaskState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Payloads up to this size live in the task item; larger ones are split into parts.
INLINE_LIMIT = 200 * 1024
PART_SIZE = 350 * 1024
LEASE_SHARD = "lease"
WAKE_PRIORITY = 86_400.0
_STATE = {"#state": "state"}


def _pk(task_id: str) -> dict[str, Any]:
    return {"S": f"task#{task_id}"}


def _key(task_id: str, sk: str = "m") -> dict[str, Any]:
    return {"pk": _pk(task_id), "sk": {"S": sk}}


def _seq_key(seq: int) -> str:
    return f"c#{seq:010d}"


def _task(item: Item) -> TaskRecord:
    return TaskRecord(
        id=item["pk"].removeprefix("task#"),
        kind=TaskKind(item["kind"]),
        llm=item["llm"],
        session_id=item["sessionId"],
        state=TaskState(item["state"]),
        created_at=item["createdAt"],
        lease_seconds=item.get("leaseSeconds", 60),
        updated_at=item.get("updatedAt"),
        stream=bool(item.get("stream", False)),
        wake_id=item.get("wakeId"),
        request_size=int(item.get("requestSize", 0)),
        request=item.get("request"),
        claimed_by=item.get("claimedBy"),
        claimed_generation=item.get("claimedGeneration"),
        lease_until=item.get("leaseUntil"),
        attempts=int(item.get("attempts", 0)),
        sent_any=bool(item.get("sentAny", False)),
        chunk_count=int(item.get("chunkCount", 0)),
        status=item.get("status"),
        result_size=int(item.get("resultSize", 0)),
        result=item.get("result"),
        result_hash=item.get("resultHash"),
        error=item.get("error"),
    )


def result_hash(status: int, body: bytes | None, error: dict[str, Any] | None) -> str:
    digest = hashlib.sha256(f"{status}|{error!r}|".encode())
    digest.update(body or b"")
    return digest.hexdigest()


class DynamoTaskStore:
    """Task lifecycle: pending -> claimed -> completed | failed | cancelled.

    claim/post_chunk/complete raise TaskNotClaimedError, TaskCancelledError or
    ResultConflictError when their condition fails, and TaskNotFoundError when the
    task does not exist. Reads ignore items past `expiresAt` (moto applies no TTL).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    # --- writing payloads ------------------------------------------------------------

    def _write_parts(self, task_id: str, prefix: str, data: bytes, expires_at: float) -> None:
        parts = split(data, PART_SIZE)
        for start in range(0, len(parts), 25):
            batch = [
                {
                    "PutRequest": {
                        "Item": encode(
                            {
                                "pk": f"task#{task_id}",
                                "sk": f"{prefix}#{start + i:04d}",
                                "data": part,
                                "expiresAt": int(expires_at),
                            }
                        )
                    }
                }
                for i, part in enumerate(parts[start : start + 25])
            ]
            pending: dict[str, Any] = {self._table: batch}
            while pending:
                out = self._client.batch_write_item(RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}

    def _read_parts(self, task_id: str, prefix: str) -> bytes:
        parts = items(
            self._client,
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=values(pk=f"task#{task_id}", prefix=f"{prefix}#"),
            ConsistentRead=True,
        )
        return b"".join(part["data"] for part in parts)

    # --- lifecycle -------------------------------------------------------------------

    def put(self, task: NewTask) -> None:
        item: Item = {
            "pk": f"task#{task.id}",
            "sk": "m",
            "kind": task.kind.value,
            "llm": task.llm,
            "sessionId": task.session_id,
            "state": TaskState.PENDING.value,
            "queue": task.session_id,
            "createdAt": task.created_at,
            # Wakes jump the queue: the inferences queued behind them wait for them.
            "queueOrder": task.created_at - (WAKE_PRIORITY if task.kind is TaskKind.WAKE else 0),
            "updatedAt": task.created_at,
            "leaseSeconds": task.lease_seconds,
            "stream": task.stream,
            "wakeId": task.wake_id,
            "expiresAt": int(task.expires_at),
        }
        if task.request is not None:
            item["requestSize"] = len(task.request)
            if len(task.request) <= INLINE_LIMIT:
                item["request"] = task.request
            else:
                self._write_parts(task.id, "q", task.request, task.expires_at)
        with condition(f"task {task.id} exists"):
            self._client.put_item(
                TableName=self._table,
                Item=encode(item),
                ConditionExpression=NOT_EXISTS,
                ExpressionAttributeNames={"#pk": "pk"},
            )

    def get(self, task_id: str, now: float) -> TaskRecord:
        raw = self._client.get_item(
            TableName=self._table, Key=_key(task_id), ConsistentRead=True
        ).get("Item")
        item = decode(raw) if raw else None
        if item is None or item.get("expiresAt", now + 1) < now:
            raise TaskNotFoundError(f"task {task_id} does not exist or has expired", param="id")
        return _task(item)

    def request(self, task: TaskRecord) -> bytes:
        if task.request is not None:
            return task.request
        return self._read_parts(task.id, "q") if task.request_size else b""

    def result(self, task: TaskRecord) -> bytes | None:
        if task.result is not None or not task.result_size:
            return task.result
        return self._read_parts(task.id, "r")

    def pending(self, session_id: str, limit: int) -> list[str]:
        """Ids of pending tasks of a session, oldest first (the index may lag: claim decides)."""
        page = self._client.query(
            TableName=self._table,
            IndexName="byQueue",
            KeyConditionExpression="#queue = :sid",
            ExpressionAttributeNames={"#queue": "queue"},
            ExpressionAttributeValues=values(sid=session_id),
            Limit=limit,
        )
        return [decode(raw)["pk"].removeprefix("task#") for raw in page.get("Items", [])]

    def claim(self, task_id: str, session_id: str, generation: int, now: float) -> TaskRecord:
        """pending -> claimed for this session; ConditionFailedError if someone else got it."""
        with condition(f"task {task_id} is no longer pending"):
            raw = self._client.update_item(
                TableName=self._table,
                Key=_key(task_id),
                UpdateExpression="SET #state = :claimed, claimedBy = :sid, "
                "claimedGeneration = :gen, leaseShard = :shard, "
                "leaseUntil = :now + leaseSeconds, updatedAt = :now "
                "ADD attempts :one REMOVE #queue",
                ConditionExpression=f"{STATE_IS} AND sessionId = :sid",
                ExpressionAttributeNames={**_STATE, "#queue": "queue"},
                ExpressionAttributeValues=values(
                    state=TaskState.PENDING.value,
                    claimed=TaskState.CLAIMED.value,
                    sid=session_id,
                    gen=generation,
                    shard=LEASE_SHARD,
                    now=now,
                    one=1,
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return _task(decode(raw))

    def _explain(self, task_id: str, exc: ConditionFailedError, session_id: str) -> Exception:
        """Turn a lost condition on a claimed task into the error the caller must see."""
        old = exc.old
        if not old:
            return TaskNotFoundError(f"task {task_id} does not exist", param="taskId")
        state = TaskState(old["state"])
        if state is TaskState.CANCELLED:
            return TaskCancelledError(f"task {task_id} was cancelled: the client went away")
        if old.get("claimedBy") != session_id:
            return TaskNotClaimedError(f"task {task_id} is not claimed by session {session_id}")
        if state.done:
            return ResultConflictError(f"task {task_id} is already {state.value}")
        return TaskNotClaimedError(f"task {task_id} is {state.value}")

    def post_chunk(self, task_id: str, session_id: str, seq: int, data: bytes, now: float) -> None:
        """Store chunk `seq` and renew the lease; the same seq twice is harmless."""
        try:
            with condition("not claimed"):
                self._client.update_item(
                    TableName=self._table,
                    Key=_key(task_id),
                    UpdateExpression="SET leaseUntil = :now + leaseSeconds, sentAny = :true, "
                    "updatedAt = :now",
                    ConditionExpression=f"{STATE_IS} AND {CLAIMED_BY}",
                    ExpressionAttributeNames=_STATE,
                    ExpressionAttributeValues=values(
                        state=TaskState.CLAIMED.value, sid=session_id, now=now, true=True
                    ),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as exc:
            raise self._explain(task_id, exc, session_id) from exc
        try:
            self._client.put_item(
                TableName=self._table,
                Item=encode({"pk": f"task#{task_id}", "sk": _seq_key(seq), "data": data}),
                ConditionExpression="attribute_not_exists(pk) OR #data = :data",
                ExpressionAttributeNames={"#data": "data"},
                ExpressionAttributeValues=values(data=data),
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise ResultConflictError(
                f"chunk {seq} of task {task_id} was already posted with other content",
                param="seq",
            ) from exc

    def complete(
        self,
        task_id: str,
        session_id: str,
        *,
        state: TaskState,
        status: int,
        body: bytes | None,
        error: dict[str, Any] | None,
        chunk_count: int,
        now: float,
        expires_at: float,
    ) -> TaskRecord:
        """claimed -> completed/failed. The same result again is harmless; another conflicts."""
        digest = result_hash(status, body, error)
        item: dict[str, Any] = {
            "done": state.value,
            "status": status,
            "error": error,
            "chunkCount": chunk_count,
            "resultHash": digest,
            "now": now,
            "exp": int(expires_at),
            "resultSize": len(body) if body is not None else 0,
        }
        sets = [
            "#state = :done",
            "#status = :status",
            "chunkCount = :chunkCount",
            "resultHash = :resultHash",
            "updatedAt = :now",
            "expiresAt = :exp",
            "resultSize = :resultSize",
        ]
        if error is not None:
            sets.append("#error = :error")
        if body is not None and len(body) <= INLINE_LIMIT:
            sets.append("#result = :result")
            item["result"] = body
        elif body is not None:
            self._write_parts(task_id, "r", body, expires_at)
        vals = {k: v for k, v in item.items() if v is not None}
        try:
            with condition("not claimed"):
                raw = self._client.update_item(
                    TableName=self._table,
                    Key=_key(task_id),
                    UpdateExpression="SET " + ", ".join(sets) + " REMOVE leaseShard",
                    ConditionExpression=f"{STATE_IS} AND {CLAIMED_BY}",
                    ExpressionAttributeNames={
                        **_STATE,
                        "#status": "status",
                        **({"#error": "error"} if error is not None else {}),
                        **({"#result": "result"} if "result" in vals else {}),
                    },
                    ExpressionAttributeValues=values(
                        state=TaskState.CLAIMED.value, sid=session_id, **vals
                    ),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )["Attributes"]
        except ConditionFailedError as exc:
            old = exc.old
            if old and old.get("resultHash") == digest and old.get("claimedBy") == session_id:
                return _task(old)
            raise self._explain(task_id, exc, session_id) from exc
        return _task(decode(raw))

    def finish(
        self,
        task_id: str,
        state: TaskState,
        error: dict[str, Any] | None,
        now: float,
        expires_at: float,
        *,
        only_if: str = "",
        **cond_values: Any,
    ) -> TaskRecord:
        """Force a task that is not done yet into `state` (cancel, lease lost, publisher gone)."""
        cond = "#state IN (:pending, :claimed)" + (f" AND {only_if}" if only_if else "")
        with condition(f"task {task_id} already done"):
            raw = self._client.update_item(
                TableName=self._table,
                Key=_key(task_id),
                UpdateExpression="SET #state = :new, #error = :error, updatedAt = :now, "
                "expiresAt = :exp, #status = :status REMOVE #queue, leaseShard",
                ConditionExpression=cond,
                ExpressionAttributeNames={
                    **_STATE,
                    "#queue": "queue",
                    "#error": "error",
                    "#status": "status",
                },
                ExpressionAttributeValues=values(
                    pending=TaskState.PENDING.value,
                    claimed=TaskState.CLAIMED.value,
                    new=state.value,
                    error=error or {},
                    now=now,
                    exp=int(expires_at),
                    status=(error or {}).get(
                        "status", 499 if state is TaskState.CANCELLED else 503
                    ),
                    **cond_values,
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return _task(decode(raw))

    def requeue(self, task_id: str, now: float) -> TaskRecord:
        """Hand a claimed task whose lease ran out, nothing of it sent, out again."""
        with condition(f"task {task_id} cannot be requeued"):
            raw = self._client.update_item(
                TableName=self._table,
                Key=_key(task_id),
                UpdateExpression="SET #state = :pending, #queue = sessionId, updatedAt = :now "
                "REMOVE claimedBy, claimedGeneration, leaseShard, leaseUntil",
                ConditionExpression=f"{STATE_IS} AND {LEASE_EXPIRED} AND {NOTHING_SENT}",
                ExpressionAttributeNames={**_STATE, "#queue": "queue"},
                ExpressionAttributeValues=values(
                    state=TaskState.CLAIMED.value, pending=TaskState.PENDING.value, now=now
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return _task(decode(raw))

    def extend_lease(self, task_id: str, now: float) -> None:
        with condition(f"task {task_id} changed"):
            self._client.update_item(
                TableName=self._table,
                Key=_key(task_id),
                UpdateExpression="SET leaseUntil = :now + leaseSeconds",
                ConditionExpression=f"{STATE_IS} AND {LEASE_EXPIRED}",
                ExpressionAttributeNames=_STATE,
                ExpressionAttributeValues=values(state=TaskState.CLAIMED.value, now=now),
            )

    def expired_leases(self, now: float) -> list[str]:
        claimed = items(
            self._client,
            "query",
            TableName=self._table,
            IndexName="byLease",
            KeyConditionExpression="leaseShard = :shard AND leaseUntil < :now",
            ExpressionAttributeValues=values(shard=LEASE_SHARD, now=now),
        )
        return [item["pk"].removeprefix("task#") for item in claimed]

    # --- reading a stream ------------------------------------------------------------

    def read_stream(self, task_id: str, after_seq: int, now: float) -> StreamRead:
        """Chunks with seq > after_seq, in order, plus the task item (one Query)."""
        chunks: list[Chunk] = []
        task: TaskRecord | None = None
        page = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues=values(
                pk=f"task#{task_id}", lo=_seq_key(after_seq + 1), hi="m"
            ),
            ConsistentRead=True,
        )
        for raw in page.get("Items", []):
            item = decode(raw)
            if item["sk"] == "m":
                if item.get("expiresAt", now + 1) >= now:
                    task = _task(item)
            else:
                chunks.append(Chunk(seq=int(item["sk"][2:]), data=item["data"]))
        return StreamRead(chunks=chunks, task=task, complete="LastEvaluatedKey" not in page)
