"""Tasks in DynamoDB: the task item (sk `m`) of each task's partition and its
lifecycle, pending -> claimed -> completed | failed | cancelled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from natrelay.store._dynamo import (
    CLAIMED_BY,
    FOR_SESSION,
    NOT_EXISTS,
    NOT_EXPIRED,
    PREFERS_SESSION,
    STATE_IS,
    Item,
    condition,
    decode,
    encode,
    off_loop,
    values,
)
from natrelay.store._task_items import (
    INLINE_LIMIT,
    LEASE_SHARD,
    STATE_NAMES,
    force_end,
    pool_queue,
    put_new_task,
    queue_fields,
    read_parts,
    result_hash,
    result_parts,
    task_key,
    task_record,
    write_parts,
)
from natrelay.store.errors import ConditionFailedError, SameResultError
from natrelay.store.idempotency import claim_op, idempotency_record
from natrelay.store.records import IdempotencyRecord, NewTask, TaskRecord
from natrelay.wire import Endpoint, TaskState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoTaskStore:
    """Task lifecycle: pending -> claimed -> completed | failed | cancelled.

    A lost condition raises ConditionFailedError; where the docstring says so, its
    `record` is the task as it was (None: no such task). Reads ignore items past
    `expiresAt` (moto applies no TTL).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    # --- lifecycle -------------------------------------------------------------------

    @off_loop
    def put(
        self, task: NewTask, once: IdempotencyRecord | None = None, replacing: str | None = None
    ) -> None:
        """Write a pending task. With `once`, also make that idempotency record the
        client key's, in one transaction: if another live record holds the key (not
        the one naming `replacing`, a task found gone), nothing is written and
        ConditionFailedError's `record` is that IdempotencyRecord."""
        item: Item = {
            "pk": f"task#{task.id}",
            "sk": "m",
            "kind": task.kind.value,
            "llm": task.llm,
            "state": TaskState.PENDING.value,
            "queue": pool_queue(task.llm),
            "targetSession": task.target_session,
            "wakeTarget": task.wake_target,
            "createdAt": task.created_at,
            **queue_fields(task),
            "updatedAt": task.created_at,
            "leaseSeconds": task.lease_seconds,
            "stream": task.stream,
            # chat, the API of tasks before there were others, is left out
            "endpoint": None if task.endpoint == Endpoint.CHAT else task.endpoint,
            "agent": task.agent,
            "wakeId": task.wake_id,
            "clientKey": task.client_key,
            "usageDay": task.usage_day,
            "slot": task.slot,
            "reserved": task.reserved or None,
            "expiresAt": int(task.expires_at),
            "receivedAt": task.received_at,
            "traceparent": task.traceparent,
        }
        if task.request is not None:
            item["requestSize"] = len(task.request)
            if len(task.request) <= INLINE_LIMIT:
                item["request"] = task.request
            else:
                write_parts(
                    self._client,
                    self._table,
                    task.id,
                    "q",
                    data=task.request,
                    expires_at=task.expires_at,
                )
        if once is None:
            put_new_task(self._client, self._table, task.id, item)
            return
        ops = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": encode(item),
                    "ConditionExpression": NOT_EXISTS,
                    "ExpressionAttributeNames": {"#pk": "pk"},
                }
            },
            claim_op(self._table, once, task.created_at, replacing),
        ]
        try:
            self._client.transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons", [])
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                held = reasons[1].get("Item")
                raise ConditionFailedError(
                    "the Idempotency-Key already started a task",
                    record=idempotency_record(decode(held)) if held else None,
                ) from exc
            raise

    @off_loop
    def get(self, task_id: str, now: float) -> TaskRecord | None:
        """The task, or None if it does not exist or has expired."""
        raw = self._client.get_item(
            TableName=self._table, Key=task_key(task_id), ConsistentRead=True
        ).get("Item")
        item = decode(raw) if raw else None
        if item is None or item.get("expiresAt", now + 1) < now:
            return None
        return task_record(item)

    @off_loop
    def get_many(self, task_ids: list[str], now: float) -> dict[str, TaskRecord]:
        """The tasks of `task_ids` that exist and have not expired, by id (BatchGetItem,
        100 keys a call; what DynamoDB leaves unprocessed is asked again)."""
        found: dict[str, TaskRecord] = {}
        for start in range(0, len(task_ids), 100):
            keys = [task_key(t) for t in dict.fromkeys(task_ids[start : start + 100])]
            request: Any = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                answer = self._client.batch_get_item(RequestItems=request)
                for raw in answer.get("Responses", {}).get(self._table, []):
                    item = decode(raw)
                    if item.get("expiresAt", now + 1) >= now:
                        task = task_record(item)
                        found[task.id] = task
                request = answer.get("UnprocessedKeys") or None
        return found

    @off_loop
    def request(self, task: TaskRecord) -> bytes:
        if task.request is not None:
            return task.request
        return read_parts(self._client, self._table, task.id, "q") if task.request_size else b""

    @off_loop
    def result(self, task: TaskRecord) -> bytes | None:
        if task.result is not None or not task.result_size:
            return task.result
        return read_parts(self._client, self._table, task.id, task.result_parts or "r")

    @off_loop
    def claim(
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
        """pending -> claimed for this session of publisher key `key`, unless it expired,
        names another session as its target, or prefers another member for a while yet
        (and, with `llms`, only a task of one of those pools: for ids a publisher names
        itself); `asked`: when the claiming poll began (the task's timeline).

        ConditionFailedError (`record`: the task as it was) if someone else got it, it
        ended, or it expired while queued.
        """
        pools = {f":llm{i}": name for i, name in enumerate(llms or ())}
        if llms is not None and not pools:
            raise ConditionFailedError(f"task {task_id}: no pool to claim it for")
        with condition(f"task {task_id} is no longer pending", task_record):
            raw = self._client.update_item(
                TableName=self._table,
                Key=task_key(task_id),
                UpdateExpression="SET #state = :claimed, sessionId = :sid, claimedBy = :sid, "
                "claimedKey = :key, "
                "claimedGeneration = :gen, claimedAt = :now, leaseShard = :shard, "
                "leaseUntil = :now + leaseSeconds, updatedAt = :now, askedAt = :asked "
                "ADD attempts :one REMOVE #queue",
                ConditionExpression=f"{STATE_IS} AND {FOR_SESSION} AND {PREFERS_SESSION} "
                f"AND {NOT_EXPIRED}" + (f" AND llm IN ({', '.join(pools)})" if pools else ""),
                ExpressionAttributeNames={**STATE_NAMES, "#queue": "queue"},
                ExpressionAttributeValues=values(
                    state=TaskState.PENDING.value,
                    claimed=TaskState.CLAIMED.value,
                    sid=session_id,
                    key=key,
                    gen=generation,
                    shard=LEASE_SHARD,
                    now=now,
                    asked=now if asked is None else min(asked, now),
                    one=1,
                    **{p.removeprefix(":"): name for p, name in pools.items()},
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        return task_record(decode(raw))

    @off_loop
    def mark_sent(
        self, task_id: str, session_id: str, key: str, now: float, relayed: int = 0
    ) -> None:
        """Record that the claiming session sent something (`relayed` bytes of text
        more), and renew its lease.

        ConditionFailedError (`record`: the task as it was) unless that session, of
        publisher key `key`, holds it.
        """
        with condition(f"task {task_id} is not claimed by {session_id}", task_record):
            self._client.update_item(
                TableName=self._table,
                Key=task_key(task_id),
                UpdateExpression="SET leaseUntil = :now + leaseSeconds, sentAny = :true, "
                "updatedAt = :now, firstTokenAt = if_not_exists(firstTokenAt, :now) "
                "ADD relayed :relayed",
                ConditionExpression=f"{STATE_IS} AND {CLAIMED_BY}",
                ExpressionAttributeNames=STATE_NAMES,
                ExpressionAttributeValues=values(
                    state=TaskState.CLAIMED.value,
                    sid=session_id,
                    key=key,
                    now=now,
                    true=True,
                    relayed=relayed,
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

    @off_loop
    def store_result(
        self,
        task_id: str,
        session_id: str,
        *,
        key: str,
        state: TaskState,
        status: int,
        body: bytes | None,
        error: dict[str, Any] | None,
        chunk_count: int,
        now: float,
        expires_at: float,
    ) -> TaskRecord:
        """claimed -> completed/failed by the claiming session. The same result again
        raises SameResultError (`record`: the task as stored); anything else
        ConditionFailedError whose `record` is the task as it was."""
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
            # Parts are keyed by the result's hash: a post that loses the condition below
            # writes parts no task item names, so they are never read.
            parts = result_parts(digest)
            sets.append("resultParts = :resultParts")
            item["resultParts"] = parts
            write_parts(self._client, self._table, task_id, parts, data=body, expires_at=expires_at)
        vals = {k: v for k, v in item.items() if v is not None}
        try:
            with condition(f"task {task_id} is not claimed by {session_id}", task_record):
                raw = self._client.update_item(
                    TableName=self._table,
                    Key=task_key(task_id),
                    UpdateExpression="SET " + ", ".join(sets) + " REMOVE leaseShard",
                    ConditionExpression=f"{STATE_IS} AND {CLAIMED_BY}",
                    ExpressionAttributeNames={
                        **STATE_NAMES,
                        "#status": "status",
                        **({"#error": "error"} if error is not None else {}),
                        **({"#result": "result"} if "result" in vals else {}),
                    },
                    ExpressionAttributeValues=values(
                        state=TaskState.CLAIMED.value, sid=session_id, key=key, **vals
                    ),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )["Attributes"]
        except ConditionFailedError as exc:
            old = exc.record
            if (
                isinstance(old, TaskRecord)
                and old.result_hash == digest
                and old.claimed_by == session_id
                and old.claimed_key == key
            ):
                raise SameResultError(f"task {task_id} holds this result", record=old) from exc
            raise
        return task_record(decode(raw))

    @off_loop
    def end_unfinished(
        self,
        task_id: str,
        state: TaskState,
        *,
        status: int,
        error: dict[str, Any],
        now: float,
        expires_at: float,
    ) -> TaskRecord:
        """Force a task that is not done yet into `state`; ConditionFailedError if done."""
        return force_end(
            self._client,
            self._table,
            task_id,
            state,
            status=status,
            error=error,
            now=now,
            expires_at=expires_at,
        )

    @off_loop
    def fail_if_pending(
        self, task_id: str, *, status: int, error: dict[str, Any], now: float, expires_at: float
    ) -> TaskRecord:
        """Fail a task nobody claimed yet; ConditionFailedError otherwise."""
        return force_end(
            self._client,
            self._table,
            task_id,
            TaskState.FAILED,
            status=status,
            error=error,
            now=now,
            expires_at=expires_at,
            only_if="#state = :pendingonly",
            pendingonly=TaskState.PENDING.value,
        )
