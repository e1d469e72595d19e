"""Leases of claimed tasks (the `byLease` index of the tasks table): what the sweep
finds past its deadline, and how each such task is extended, handed out again or
failed. Every transition is conditional on the lease having run out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from natrelay.store._dynamo import (
    LEASE_EXPIRED,
    NOTHING_SENT,
    STATE_IS,
    condition,
    decode,
    items,
    off_loop,
    values,
)
from natrelay.store._task_items import (
    LEASE_SHARD,
    STATE_NAMES,
    force_end,
    pool_queue,
    task_key,
    task_record,
)
from natrelay.store.records import TaskRecord
from natrelay.wire import TaskState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoLeaseStore:
    """Claimed tasks by lease deadline. A lost condition (the task changed meanwhile)
    raises ConditionFailedError."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def _claimed(self, deadline: str, now: float) -> list[str]:
        """Ids of claimed tasks by lease: `deadline` is the key condition on it."""
        claimed = items(
            self._client,
            "query",
            TableName=self._table,
            IndexName="byLease",
            KeyConditionExpression=f"leaseShard = :shard AND {deadline}",
            ExpressionAttributeValues=values(shard=LEASE_SHARD, now=now),
        )
        return [item["pk"].removeprefix("task#") for item in claimed]

    @off_loop
    def expired(self, now: float) -> list[str]:
        """Ids of claimed tasks whose lease ran out before `now`."""
        return self._claimed("leaseUntil < :now", now)

    @off_loop
    def running(self, now: float) -> list[str]:
        """Ids of claimed tasks whose lease has not run out (the sweep checks that their
        sessions still hold them)."""
        return self._claimed("leaseUntil >= :now", now)

    @off_loop
    def extend_if_expired(self, task_id: str, now: float) -> None:
        with condition(f"task {task_id} changed"):
            self._client.update_item(
                TableName=self._table,
                Key=task_key(task_id),
                UpdateExpression="SET leaseUntil = :now + leaseSeconds",
                ConditionExpression=f"{STATE_IS} AND {LEASE_EXPIRED}",
                ExpressionAttributeNames=STATE_NAMES,
                ExpressionAttributeValues=values(state=TaskState.CLAIMED.value, now=now),
            )

    def _requeue(self, task: TaskRecord, now: float, cond: str, **vals: Any) -> TaskRecord:
        """Back to the head of its pool's queue: it keeps its place (`queueOrder`, when
        it first came), ahead of every request that came after it. `lostBy` names the
        session it was taken from (a late post of that session hears `task_moved`)."""
        with condition(f"task {task.id} cannot be requeued"):
            raw = self._client.update_item(
                TableName=self._table,
                Key=task_key(task.id),
                UpdateExpression="SET #state = :pending, #queue = :pool, updatedAt = :now, "
                "lostBy = claimedBy "
                "REMOVE sessionId, claimedBy, claimedKey, claimedGeneration, claimedAt, "
                # the member it was meant for did not run it: any member may now
                "leaseShard, leaseUntil, prefer, preferUntil",
                ConditionExpression=f"{STATE_IS} AND {NOTHING_SENT} AND {cond}",
                ExpressionAttributeNames={**STATE_NAMES, "#queue": "queue"},
                ExpressionAttributeValues=values(
                    state=TaskState.CLAIMED.value,
                    pending=TaskState.PENDING.value,
                    pool=pool_queue(task.llm),
                    now=now,
                    **vals,
                ),
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return task_record(decode(raw))

    @off_loop
    def requeue_if_expired(self, task: TaskRecord, now: float) -> TaskRecord:
        """Hand a claimed task whose lease ran out, nothing of it sent, out again (back
        to its pool's queue)."""
        return self._requeue(task, now, LEASE_EXPIRED)

    @off_loop
    def requeue_if_unsent(self, task: TaskRecord, session_id: str, now: float) -> TaskRecord:
        """Hand a task this session claimed (`task` as read: the same claim, by its
        attempt) and sent nothing of back to its pool at once; ConditionFailedError
        otherwise: exactly one of many who noticed requeues it."""
        return self._requeue(
            task,
            now,
            "claimedBy = :sid AND attempts = :attempts",
            sid=session_id,
            attempts=task.attempts,
        )

    @off_loop
    def fail_if_expired(
        self, task_id: str, *, status: int, error: dict[str, Any], now: float, expires_at: float
    ) -> TaskRecord:
        """Fail a claimed task whose lease ran out."""
        return force_end(
            self._client,
            self._table,
            task_id,
            TaskState.FAILED,
            status=status,
            error=error,
            now=now,
            expires_at=expires_at,
            only_if="leaseUntil < :cutoff",
            cutoff=now,
        )
