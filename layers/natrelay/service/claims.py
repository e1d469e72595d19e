"""The publisher's side of a task: long-poll and claim, fetch the request, post
chunks and the result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from natrelay.errors import (
    ForbiddenError,
    RelayError,
    ResultConflictError,
    TaskCancelledError,
    TaskNotClaimedError,
)
from natrelay.service.access import Principal
from natrelay.service.context import Context
from natrelay.service.endings import Endings, session_key
from natrelay.service.payloads import MAX_CHUNK_BATCH_BYTES, POLL_INLINE_BUDGET, check_size, dumps
from natrelay.service.sessions import Sessions
from natrelay.service.usage import Usage
from natrelay.service.wakes import Wakes
from natrelay.store import (
    Chunk,
    ConditionFailedError,
    SameResultError,
    SessionRecord,
    TaskRecord,
)
from natrelay.wire import ChunkBatch, PollRequest, TaskKind, TaskResult, TaskState


def _not_claimed(task_id: str) -> TaskNotClaimedError:
    # The same answer for a task that does not exist and one another session holds.
    return TaskNotClaimedError(f"task {task_id} is not claimed by this session")


def _refused(task_id: str, session_id: str, key: str, exc: ConditionFailedError) -> RelayError:
    """Why a write on a claimed task lost its condition, as the publisher must hear it
    (and nothing more: another session learns nothing of the task)."""
    old = exc.record
    if not isinstance(old, TaskRecord) or old.claimed_key not in (key, None):
        return _not_claimed(task_id)
    if old.state is TaskState.CANCELLED:
        return TaskCancelledError(f"task {task_id} was cancelled: the client went away")
    if old.claimed_by != session_id:
        return _not_claimed(task_id)
    if old.state.done:
        return ResultConflictError(f"task {task_id} is already {old.state.value}")
    return TaskNotClaimedError(f"task {task_id} is {old.state.value}")


class Claims:
    def __init__(
        self, ctx: Context, sessions: Sessions, wakes: Wakes, endings: Endings, usage: Usage
    ) -> None:
        self.usage = usage
        self.ctx = ctx
        self.stores = ctx.stores
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.signals = ctx.signals
        self.sessions = sessions
        self.wakes = wakes
        self.endings = endings

    async def poll(
        self,
        principal: Principal,
        req: PollRequest,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[TaskRecord]:
        """Claim up to maxTasks pending tasks, waiting up to waitSeconds for some.

        Requests past the poll's inline budget come back without their body (the
        publisher fetches them). `gone` says whether the publisher hung up; a poll
        nobody waits for ends at once (and stops counting as a heartbeat) instead of
        claiming tasks into the void.
        """
        session = await self.sessions.polling_session(principal, req)
        beat_at = session.heartbeat_at
        if req.max_tasks == 0:
            return []
        deadline = self.clock() + req.wait_seconds
        pace = self.ctx.pace()
        # The ids the doorbell rang for, then those this process is told of.
        hints: list[str] = list(req.task_ids)
        with self.signals.listen(session_key(session.id)) as listener:
            while True:
                if gone is not None and await gone():
                    return []
                claimed = await self._claim(session, req.max_tasks, hints)
                if claimed:
                    return claimed
                now = self.clock()
                if now >= deadline:
                    return []
                if now - beat_at >= self.sessions.refresh_seconds:
                    session = await self.sessions.polling_session(principal, req)
                    beat_at = session.heartbeat_at
                await pace.wait(listener, deadline - now)
                hints = [h for h in listener.take() if isinstance(h, str)]

    async def _claim(
        self, session: SessionRecord, limit: int, hints: list[str]
    ) -> list[TaskRecord]:
        """Claim pending tasks: the ids this process was told of, else what the index lists."""
        out: list[TaskRecord] = []
        budget = POLL_INLINE_BUDGET
        tasks = self.stores.tasks
        ids = hints[:limit] or await tasks.pending(session.id, limit)
        for task_id in ids:
            try:
                task = await tasks.claim(
                    task_id,
                    session.id,
                    key=session.owner or "",
                    generation=session.generation,
                    now=self.clock(),
                )
            except ConditionFailedError:
                continue  # another poll won it, or it was cancelled
            if task.request is not None and len(task.request) <= budget:
                budget -= len(task.request)
            else:
                task = replace(task, request=None)
            out.append(task)
        return out

    async def task_request(self, principal: Principal, task_id: str, session_id: str) -> bytes:
        """The request of a task this session of the caller's key claimed."""
        task = await self.stores.tasks.get(task_id, self.clock())
        if task is None or task.claimed_by != session_id or task.claimed_key != principal.key_id:
            raise ForbiddenError(
                f"task {task_id} is not claimed by this session", param="providerSessionId"
            )
        return await self.stores.tasks.request(task)

    async def post_chunks(self, principal: Principal, task_id: str, batch: ChunkBatch) -> int:
        """Store a chunk batch of a claimed task; returns its seq."""
        data = dumps(batch.chunks)
        check_size(
            data,
            MAX_CHUNK_BATCH_BYTES,
            "a chunk batch may hold at most {limit} bytes; post smaller batches",
            param="chunks",
        )
        sid, key = batch.provider_session_id, principal.key_id
        try:
            await self.stores.tasks.mark_sent(task_id, sid, key, self.clock())
        except ConditionFailedError as exc:
            raise _refused(task_id, sid, key, exc) from exc
        try:
            await self.stores.chunks.put_chunk(task_id, batch.seq, data)
        except ConditionFailedError as exc:
            raise ResultConflictError(
                f"chunk {batch.seq} of task {task_id} was already posted with other content",
                param="seq",
            ) from exc
        self.endings.notify(task_id, Chunk(seq=batch.seq, data=data))
        return batch.seq

    async def post_result(
        self, principal: Principal, task_id: str, result: TaskResult
    ) -> TaskRecord:
        now = self.clock()
        error = result.error.model_dump(exclude_none=True) if result.error else None
        body = dumps(result.body) if result.body is not None else None
        if body is not None:
            check_size(
                body, self.settings.max_body_bytes, "a result may be at most {limit} bytes", "body"
            )
        sid, key = result.provider_session_id, principal.key_id
        try:
            task = await self.stores.tasks.store_result(
                task_id,
                sid,
                key=key,
                state=TaskState.FAILED if error else TaskState.COMPLETED,
                status=result.status,
                body=body,
                error=error,
                chunk_count=result.chunk_count,
                now=now,
                expires_at=self.ctx.result_expiry(now),
            )
        except SameResultError as exc:
            assert isinstance(exc.record, TaskRecord)
            return exc.record  # posted again (a retry): harmless, and counted once
        except ConditionFailedError as exc:
            raise _refused(task_id, sid, key, exc) from exc
        await self.usage.record(task, body=result.body, error=error is not None)
        if task.kind is TaskKind.WAKE:
            ok = error is None and isinstance(result.body, dict) and bool(result.body.get("ok"))
            await self.wakes.finished(task, ok, error)
        self.endings.notify(task_id, task)
        return task
