"""The task storage the service uses: one contract, two tiers behind it.

`DurableTasks` keeps every task in DynamoDB (store.durable_tasks). `MemoryTasks`
(store.memory_tasks, server mode) sits in front of it and holds the tasks handed to a
poll of this process in memory, writing each one's record behind its answer; whatever
it does not hold it passes to the durable tier. The service's rules are written against
this contract once, and never ask which tier holds a task.

Like the Powertools persistence layer: the docstrings say what each method raises. A
lost condition is ConditionFailedError whose `record`, where said, is the task as it
was (None: no such task).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Protocol

from natrelay.store.records import (
    Chunk,
    Holder,
    IdempotencyRecord,
    NewTask,
    SessionRecord,
    StreamRead,
    TaskRecord,
)
from natrelay.wire import TaskState


class TaskStorage(Protocol):
    # --- a task comes in -------------------------------------------------------------

    async def put(
        self, task: NewTask, once: IdempotencyRecord | None = None, replacing: str | None = None
    ) -> None:
        """Queue a pending task in its pool. With `once`, also make that idempotency
        record the client key's, in one transaction: if another live record holds the key
        (not the one naming `replacing`, a task found gone), nothing is written and
        ConditionFailedError's `record` is that IdempotencyRecord."""
        ...

    async def put_claimed(self, task: NewTask, session: SessionRecord, now: float) -> TaskRecord:
        """A new task claimed at once by `session` (handed to a poll of it that waits):
        the task as claimed. ConditionFailedError if the task exists already."""
        ...

    # --- reading ---------------------------------------------------------------------

    async def get(self, task_id: str, now: float) -> TaskRecord | None:
        """The task, or None if it does not exist or has expired."""
        ...

    async def get_many(self, task_ids: list[str], now: float) -> dict[str, TaskRecord]:
        """The tasks of `task_ids` that exist and have not expired, by id."""
        ...

    def held(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        """Those of the tasks this tier holds in this process's memory, as they are: what
        is known of them without a request (the durable tier holds none)."""
        ...

    async def request(self, task: TaskRecord) -> bytes:
        """The task's request, however it is stored."""
        ...

    async def result(self, task: TaskRecord) -> bytes | None:
        """The task's result body, however it is stored (None: it has none)."""
        ...

    async def read_stream(self, task_id: str, after_seq: int, now: float) -> StreamRead:
        """Stream chunks with seq > after_seq, in order, and the task as it was then."""
        ...

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
        """pending -> claimed for this session of publisher key `key`, unless it expired,
        names another session as its target or prefers another member for a while yet
        (and, with `llms`, only a task of one of those pools); `asked`: when the poll that
        claims it began (its timeline). ConditionFailedError (`record`: the task as it
        was) if someone else got it, it ended, or it expired while queued."""
        ...

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
        """Keep a stream chunk batch of a task `holder` holds (kept until `expires_at`;
        `relayed` bytes of text, added to the task's), and renew its lease. The same
        content again is harmless. ConditionFailedError
        (`record`: the task as it was) unless `holder` holds the task; ChunkDiffersError
        if that seq came with other content."""
        ...

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
        """claimed -> completed/failed by its holder: the task as it ended. The same
        result again raises SameResultError (`record`: the task as it is); anything else
        ConditionFailedError whose `record` is the task as it was."""
        ...

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
        """Force a task that is not done yet into `state`; ConditionFailedError if done."""
        ...

    async def fail_if_pending(
        self, task_id: str, *, status: int, error: dict[str, Any], now: float, expires_at: float
    ) -> TaskRecord:
        """Fail a task nobody claimed yet; ConditionFailedError otherwise."""
        ...

    async def requeue_if_unsent(self, task: TaskRecord, session_id: str, now: float) -> TaskRecord:
        """Put a task this session claimed and sent nothing of back at the head of its
        pool's queue (its place: when it first came), in one conditional write (the
        session left, restarted, died or missed its work window): the task as requeued,
        `lost_by` naming the session. The claim must be the one `task` shows (its
        attempt): of many who notice at once, exactly one requeues it, and a claim made
        since is left alone. ConditionFailedError otherwise."""
        ...

    # --- what a tier in memory holds ---------------------------------------------------

    async def held_by(self, session_id: str) -> list[TaskRecord]:
        """The unfinished tasks this tier holds in memory for the session (the durable
        tier holds none: what a session runs there, it says itself)."""
        ...

    async def spill(self, task_id: str) -> None:
        """Write a task held in memory to DynamoDB as it stands, so that any process finds
        it (its client stopped waiting here); nothing for a task that is not."""
        ...

    async def spill_expired(self, now: float) -> int:
        """Write out the tasks held in memory past their lease (a poll's answer lost on
        the way, or a long task), for the sweep's lease rules; how many."""
        ...

    async def drain(self) -> None:
        """Write every record this tier holds back (the process is stopping)."""
        ...


def queued_task(task: NewTask) -> TaskRecord:
    """A new task as it waits in its pool's queue (its request is the store's to read)."""
    return TaskRecord(
        id=task.id,
        kind=task.kind,
        llm=task.llm,
        session_id=None,
        state=TaskState.PENDING,
        created_at=task.created_at,
        lease_seconds=task.lease_seconds,
        updated_at=task.created_at,
        stream=task.stream,
        wake_id=task.wake_id,
        request_size=len(task.request or b""),
        endpoint=task.endpoint,
        agent=task.agent,
        client_key=task.client_key,
        usage_day=task.usage_day,
        slot=task.slot,
        reserved=task.reserved,
        expires_at=task.expires_at,
        target_session=task.target_session,
        wake_target=task.wake_target,
        priority=task.priority,
        queue_order=task.queue_order,
        affinity=task.affinity,
        prefer=task.prefer,
        prefer_until=task.prefer_until,
        received_at=task.received_at,
        traceparent=task.traceparent,
    )


def claimed_task(task: NewTask, session: SessionRecord, now: float) -> TaskRecord:
    """A new task as claimed at once by `session` (its request with it)."""
    return replace(
        queued_task(task),
        session_id=session.id,
        state=TaskState.CLAIMED,
        updated_at=now,
        request=task.request or b"",
        claimed_by=session.id,
        claimed_key=session.owner or "",
        claimed_at=now,
        claimed_generation=session.generation,
        lease_until=now + task.lease_seconds,
        attempts=1,
    )
