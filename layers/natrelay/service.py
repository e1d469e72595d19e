"""The relay's domain rules: sessions, tasks, wakes and the sweep. Clock injectable."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread

from natrelay import views
from natrelay.errors import (
    ConditionFailedError,
    LlmNotFoundError,
    PayloadTooLargeError,
    PublisherOfflineError,
    RelayError,
    SessionNotFoundError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from natrelay.outcomes import Outcome, offline, offline_error, task_error
from natrelay.settings import Settings
from natrelay.signals import Pace, Signals
from natrelay.store import (
    Chunk,
    DynamoLlmStore,
    DynamoTaskStore,
    LlmRecord,
    NewTask,
    SessionRecord,
    StreamRead,
    TaskRecord,
    make_client,
)
from natrelay.sweep import Sweeper
from natrelay.types import Clock, JsonObject
from natrelay.wire import (
    ChunkAck,
    ChunkBatch,
    HeartbeatRequest,
    LlmRow,
    LlmStatus,
    PolledTask,
    PollRequest,
    RegisterRequest,
    SessionRequest,
    SessionResponse,
    TaskKind,
    TaskResult,
    TaskState,
    TaskView,
)

log = logging.getLogger("natrelay.service")

P = ParamSpec("P")
R = TypeVar("R")

MAX_CHUNK_BATCH_BYTES = 350 * 1024
# A poll answer inlines requests up to this total; larger ones are fetched separately.
POLL_INLINE_BUDGET = 1024 * 1024


def new_task_id(now: float) -> str:
    """Sortable by creation time, unguessable."""
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class RelayService:
    """Every operation of the relay. Raises RelayError subclasses only."""

    def __init__(
        self,
        settings: Settings,
        llms: DynamoLlmStore,
        tasks: DynamoTaskStore,
        clock: Clock = time.time,
        signals: Signals | None = None,
    ) -> None:
        self.settings = settings
        self.llms = llms
        self.tasks = tasks
        self.clock = clock
        self.signals = signals or Signals(settings.in_process_signals)
        # Session id -> (last heartbeat refresh, generation) as this process saw them:
        # lets a poll skip re-reading its session (a hint: a miss reads DynamoDB).
        self._beats: dict[str, tuple[float, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RelayService:
        settings = settings or Settings()
        client = make_client(settings.dynamodb_endpoint, settings.region)
        return cls(
            settings,
            DynamoLlmStore(client, settings.llms_table, settings.tasks_table),
            DynamoTaskStore(client, settings.tasks_table),
        )

    async def io(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a blocking store call off the event loop."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    # --- views -----------------------------------------------------------------------

    def row_view(self, row: LlmRecord) -> LlmRow:
        return views.row_view(row, self.clock())

    def task_view(self, task: TaskRecord, result: bytes | None = None) -> TaskView:
        return views.task_view(task, result)

    def _session_response(self, session: SessionRecord, rows: list[LlmRecord]) -> SessionResponse:
        self._beats[session.id] = (session.heartbeat_at, session.generation)
        return SessionResponse(
            provider_session_id=session.id,
            llms=[self.row_view(r) for r in rows],
            generation=session.generation,
        )

    # --- publisher side ----------------------------------------------------------------

    async def register(self, req: RegisterRequest) -> SessionResponse:
        session_id = req.provider_session_id or new_session_id()
        s = self.settings
        session, rows = await self.io(
            self.llms.register,
            session_id,
            list(req.providers),
            self.clock(),
            s.heartbeat_timeout_seconds,
            s.inactive_retention_seconds,
        )
        log.info("session %s registered %s", session_id, [r.name for r in rows])
        return self._session_response(session, rows)

    async def _beat(
        self, session: SessionRecord, statuses: dict[str, LlmStatus]
    ) -> list[LlmRecord]:
        s = self.settings
        return await self.io(
            self.llms.heartbeat,
            session,
            statuses,
            self.clock(),
            s.heartbeat_timeout_seconds,
            s.inactive_retention_seconds,
        )

    async def heartbeat(self, req: HeartbeatRequest) -> SessionResponse:
        session = await self.io(self.llms.get_session, req.provider_session_id)
        rows = await self._beat(session, dict(req.statuses))
        return self._session_response(replace(session, heartbeat_at=self.clock()), rows)

    @property
    def _refresh_seconds(self) -> float:
        """How often a long-poll refreshes its session's heartbeat."""
        return min(15.0, self.settings.heartbeat_timeout_seconds / 4)

    async def poll(
        self, req: PollRequest, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> list[PolledTask]:
        """Claim up to maxTasks pending tasks, waiting up to waitSeconds for some.

        `gone` says whether the publisher hung up; a poll nobody waits for ends at once
        (and stops counting as a heartbeat) instead of claiming tasks into the void.
        """
        session = await self._polling_session(req)
        beat_at = session.heartbeat_at
        if req.max_tasks == 0:
            return []
        s = self.settings
        deadline = self.clock() + req.wait_seconds
        pace = Pace(s.poll_min_interval_seconds, s.poll_max_interval_seconds)
        hints: list[str] = []
        with self.signals.listen(f"session:{session.id}") as listener:
            while True:
                if gone is not None and await gone():
                    return []
                claimed = await self._claim(session, req.max_tasks, hints)
                if claimed:
                    return claimed
                now = self.clock()
                if now >= deadline:
                    return []
                if now - beat_at >= self._refresh_seconds:
                    session = await self._polling_session(req)
                    beat_at = session.heartbeat_at
                await pace.wait(listener, deadline - now)
                hints = [h for h in listener.take() if isinstance(h, str)]

    async def _polling_session(self, req: PollRequest) -> SessionRecord:
        """The session of a poll, its heartbeat refreshed when due.

        Skips the read when this process refreshed the same generation of the session
        recently; a publisher that says no generation (or another one) is read.
        """
        now = self.clock()
        seen = self._beats.get(req.provider_session_id)
        if (
            req.generation is not None
            and seen is not None
            and seen[1] == req.generation
            and now - seen[0] < self._refresh_seconds
        ):
            return SessionRecord(
                id=req.provider_session_id,
                names=(),
                statuses={},
                heartbeat_at=seen[0],
                generation=req.generation,
            )
        session = await self.io(self.llms.get_session, req.provider_session_id)
        if now - session.heartbeat_at >= self._refresh_seconds:
            await self._beat(session, {})
            session = replace(session, heartbeat_at=now)
        if len(self._beats) > 10_000:
            self._beats.clear()
        self._beats[session.id] = (session.heartbeat_at, session.generation)
        return session

    async def _claim(
        self, session: SessionRecord, limit: int, hints: list[str]
    ) -> list[PolledTask]:
        """Claim pending tasks: the ids this process was told of, else what the index lists."""
        out: list[PolledTask] = []
        budget = POLL_INLINE_BUDGET
        ids = hints[:limit] or await self.io(self.tasks.pending, session.id, limit)
        for task_id in ids:
            try:
                task = await self.io(
                    self.tasks.claim, task_id, session.id, session.generation, self.clock()
                )
            except ConditionFailedError:
                continue  # another poll won it, or it was cancelled
            inline = task.request is not None and len(task.request) <= budget
            if inline and task.request is not None:
                budget -= len(task.request)
            out.append(
                PolledTask(
                    id=task.id,
                    kind=task.kind,
                    llm=task.llm,
                    created_at=views.iso(task.created_at) or "",
                    stream=task.stream,
                    request=json.loads(task.request) if inline and task.request else None,
                    request_size=task.request_size,
                    wake_id=task.wake_id,
                    lease_seconds=task.lease_seconds,
                )
            )
        return out

    async def task_request(self, task_id: str) -> bytes:
        task = await self.io(self.tasks.get, task_id, self.clock())
        return await self.io(self.tasks.request, task)

    async def post_chunks(self, task_id: str, batch: ChunkBatch) -> ChunkAck:
        data = _dumps(batch.chunks)
        if len(data) > MAX_CHUNK_BATCH_BYTES:
            raise PayloadTooLargeError(
                f"a chunk batch may hold at most {MAX_CHUNK_BATCH_BYTES} bytes; post smaller "
                "batches",
                param="chunks",
            )
        await self.io(
            self.tasks.post_chunk,
            task_id,
            batch.provider_session_id,
            batch.seq,
            data,
            self.clock(),
        )
        self.signals.notify(f"task:{task_id}", Chunk(seq=batch.seq, data=data))
        return ChunkAck(seq=batch.seq)

    async def post_result(self, task_id: str, result: TaskResult) -> TaskView:
        now = self.clock()
        error = result.error.model_dump(exclude_none=True) if result.error else None
        body = _dumps(result.body) if result.body is not None else None
        if body is not None and len(body) > self.settings.max_body_bytes:
            raise PayloadTooLargeError(
                f"a result may be at most {self.settings.max_body_bytes} bytes", param="body"
            )
        task = await self.io(
            self.tasks.complete,
            task_id,
            result.provider_session_id,
            state=TaskState.FAILED if error else TaskState.COMPLETED,
            status=result.status,
            body=body,
            error=error,
            chunk_count=result.chunk_count,
            now=now,
            expires_at=now + self.settings.result_retention_seconds,
        )
        if task.kind is TaskKind.WAKE:
            ok = error is None and isinstance(result.body, dict) and bool(result.body.get("ok"))
            await self.io(self.llms.finish_wake, task.llm, task.id, ok)
            if ok:
                await self.io(self.llms.set_status, task.session_id, task.llm, LlmStatus.ACTIVE)
            log.info("wake %s of %s: %s", task.id, task.llm, "ok" if ok else error)
        self.signals.notify(f"task:{task_id}", task)
        return self.task_view(task)

    async def deregister(self, req: SessionRequest) -> SessionResponse:
        session = await self.io(self.llms.get_session, req.provider_session_id)
        rows = await self.io(self.llms.deregister, session, self.clock())
        await self.fail_pending(session.id, "its publisher shut down")
        log.info("session %s deregistered", session.id)
        response = self._session_response(session, rows)
        self._beats.pop(session.id, None)
        return response

    async def fail_pending(self, session_id: str, why: str) -> int:
        failed = 0
        for task_id in await self.io(self.tasks.pending, session_id, 100):
            now = self.clock()
            try:
                await self.io(
                    self.tasks.finish,
                    task_id,
                    TaskState.FAILED,
                    offline_error(f"task {task_id} was not run: {why}"),
                    now,
                    now + self.settings.result_retention_seconds,
                    only_if="#state = :pendingonly",
                    pendingonly=TaskState.PENDING.value,
                )
                failed += 1
            except ConditionFailedError:
                continue
            self.signals.notify(f"task:{task_id}")
        return failed

    # --- client side -------------------------------------------------------------------

    async def list_llms(self) -> list[LlmRow]:
        return [self.row_view(r) for r in await self.io(self.llms.all)]

    async def serving_llms(self) -> list[LlmRecord]:
        """Rows that can answer now: active, or hibernating and wakeable, with a live publisher."""
        return [r for r in await self.io(self.llms.all) if self.serving(r)]

    async def get_llm(self, name: str) -> LlmRecord:
        row = await self.io(self.llms.get, name)
        if row is None:
            raise LlmNotFoundError(f"the model {name!r} does not exist", param="model")
        return row

    async def delete_llm(self, name: str) -> None:
        if not await self.io(self.llms.delete, name):
            raise LlmNotFoundError(f"the model {name!r} does not exist", param="model")

    def serving(self, row: LlmRecord) -> bool:
        """Can the row answer now (directly, or after a wake)?"""
        if row.status is LlmStatus.INACTIVE or row.last_heartbeat_at is None:
            return False
        return self.clock() - row.last_heartbeat_at <= self.settings.heartbeat_timeout_seconds

    async def submit(self, name: str, body: JsonObject, *, stream: bool) -> TaskRecord:
        """Queue an infer task for the row's publisher, waking the backend if it sleeps."""
        raw = _dumps(body)
        if len(raw) > self.settings.max_body_bytes:
            raise PayloadTooLargeError(
                f"request body is {len(raw)} bytes; the limit is "
                f"{self.settings.max_body_bytes} bytes",
            )
        row = await self.get_llm(name)
        if not self.serving(row):
            raise offline(row, self.clock())
        wake_id = await self._ensure_wake(row) if row.status is LlmStatus.HIBERNATING else None
        assert row.session_id is not None
        now = self.clock()
        s = self.settings
        lease = s.lease_seconds + (self._wake_window(row) if wake_id else 0)
        task = NewTask(
            id=new_task_id(now),
            kind=TaskKind.INFER,
            llm=name,
            session_id=row.session_id,
            created_at=now,
            expires_at=now + lease + s.result_retention_seconds,
            lease_seconds=lease,
            stream=stream,
            request=raw,
            wake_id=wake_id,
        )
        await self.io(self.tasks.put, task)
        self.signals.notify(f"session:{row.session_id}", task.id)
        return TaskRecord(
            id=task.id,
            kind=task.kind,
            llm=name,
            session_id=task.session_id,
            state=TaskState.PENDING,
            created_at=now,
            lease_seconds=lease,
            updated_at=now,
            stream=stream,
            wake_id=wake_id,
            request_size=len(raw),
        )

    def _wake_window(self, row: LlmRecord) -> float:
        s = self.settings
        return (row.wake_max_wait or s.default_wake_seconds) + s.wake_margin_seconds

    async def _ensure_wake(self, row: LlmRecord) -> str | None:
        """Claim the row's wake (one per burst, across instances) or join the one in flight."""
        for _ in range(3):
            now = self.clock()
            wake_id = new_task_id(now)
            window = self._wake_window(row)
            try:
                await self.io(self.llms.claim_wake, row.name, wake_id, now + window, now)
            except ConditionFailedError as exc:
                old = exc.old
                if not old:
                    raise LlmNotFoundError(
                        f"the model {row.name!r} does not exist", param="model"
                    ) from exc
                status = LlmStatus(old["status"])
                if status is LlmStatus.ACTIVE:
                    return None
                if status is LlmStatus.INACTIVE:
                    raise offline(row, now) from exc
                if old.get("wakeId") and float(old.get("wakeDeadline", 0)) > now:
                    return str(old["wakeId"])
                continue  # the marker expired between the read and our write: try again
            assert row.session_id is not None
            await self.io(
                self.tasks.put,
                NewTask(
                    id=wake_id,
                    kind=TaskKind.WAKE,
                    llm=row.name,
                    session_id=row.session_id,
                    created_at=now,
                    expires_at=now + window + self.settings.result_retention_seconds,
                    lease_seconds=window,
                ),
            )
            self.signals.notify(f"session:{row.session_id}", wake_id)
            log.info("wake %s of %s queued", wake_id, row.name)
            return wake_id
        raise PublisherOfflineError(f"could not start a wake of {row.name}; try again")

    async def _publisher_gone(self, task: TaskRecord) -> TaskRecord | None:
        """Fail the task if its publisher session stopped heartbeating; else None."""
        try:
            session = await self.io(self.llms.get_session, task.session_id)
            alive = self.clock() - session.heartbeat_at <= self.settings.heartbeat_timeout_seconds
        except SessionNotFoundError:
            alive = False
        if alive:
            return None
        now = self.clock()
        try:
            failed = await self.io(
                self.tasks.finish,
                task.id,
                TaskState.FAILED,
                offline_error(f"the publisher of {task.llm} went offline during task {task.id}"),
                now,
                now + self.settings.result_retention_seconds,
            )
        except ConditionFailedError:
            failed = await self.io(self.tasks.get, task.id, now)
        self.signals.notify(f"task:{task.id}")
        return failed

    async def wait(self, task_id: str, budget: float, *, fresh: bool = False) -> TaskRecord:
        """Wait until the task is done; TaskTimeoutError (naming it) past the budget.

        `fresh`: the task was just submitted, so there is nothing to read yet.
        """
        s = self.settings
        deadline = self.clock() + budget
        pace = Pace(s.poll_min_interval_seconds, s.poll_max_interval_seconds)
        next_liveness = self.clock() + min(5.0, s.heartbeat_timeout_seconds / 2)
        handed: list[TaskRecord] = []
        with self.signals.listen(f"task:{task_id}") as listener:
            if fresh:
                await pace.wait(listener, deadline - self.clock())
                handed = [h for h in listener.take() if isinstance(h, TaskRecord)]
            while True:
                if handed and handed[-1].state.done:
                    return handed[-1]
                task = await self.io(self.tasks.get, task_id, self.clock())
                if task.state.done:
                    return task
                now = self.clock()
                if now >= next_liveness:
                    next_liveness = now + min(5.0, s.heartbeat_timeout_seconds / 2)
                    gone = await self._publisher_gone(task)
                    if gone is not None:
                        return gone
                if now >= deadline:
                    raise TaskTimeoutError(
                        f"no answer within {budget:g} s; task {task_id} is still "
                        f"{task.state.value}: fetch it later at /api/v1/tasks/{task_id}",
                        task_id=task_id,
                    )
                await pace.wait(listener, deadline - now)
                handed = [h for h in listener.take() if isinstance(h, TaskRecord)]

    async def outcome(self, task: TaskRecord) -> Outcome:
        """The finished task's answer, or the error it ended with (raised)."""
        if task.state is TaskState.COMPLETED:
            raw = await self.io(self.tasks.result, task)
            return Outcome(status=task.status or 200, body=json.loads(raw) if raw else None)
        raise task_error(task)

    async def stream(
        self,
        task_id: str,
        after_seq: int = -1,
        budget: float | None = None,
        *,
        submitted: TaskRecord | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Chunks in order as they arrive; raises the task's error if it failed.

        `submitted`: the task as just submitted, so there is nothing to read yet.
        """
        s = self.settings
        deadline = self.clock() + (budget or s.stream_timeout_seconds)
        cursor = after_seq
        pace = Pace(s.poll_min_interval_seconds, s.poll_max_interval_seconds)
        next_liveness = self.clock() + min(5.0, s.heartbeat_timeout_seconds / 2)
        hints: list[object] = []
        last: TaskRecord | None = submitted
        with self.signals.listen(f"task:{task_id}") as listener:
            if submitted is not None:
                await pace.wait(listener, deadline - self.clock())
                hints = listener.take()
            while True:
                read = _from_hints(hints, cursor, last)
                from_hints = read is not None
                if read is None:
                    read = await self.io(self.tasks.read_stream, task_id, cursor, self.clock())
                progressed = False
                for chunk in read.chunks:
                    if chunk.seq != cursor + 1:
                        break  # a gap: the missing batch is still being written
                    cursor = chunk.seq
                    progressed = True
                    yield chunk
                task = last = read.task
                if task is None:
                    raise TaskNotFoundError(
                        f"task {task_id} does not exist or has expired", param="id"
                    )
                if task.state.done and read.complete and cursor + 1 >= task.chunk_count:
                    if task.state is not TaskState.COMPLETED:
                        raise task_error(task)
                    return
                now = self.clock()
                if now >= next_liveness:
                    next_liveness = now + min(5.0, s.heartbeat_timeout_seconds / 2)
                    if not task.state.done and await self._publisher_gone(task) is not None:
                        continue
                if now >= deadline:
                    raise TaskTimeoutError(
                        f"the stream did not finish within the request's budget; task "
                        f"{task_id} goes on: read the rest at /api/v1/tasks/{task_id}/events",
                        task_id=task_id,
                    )
                if progressed and not from_hints:
                    pace.reset()
                    hints = listener.take()
                    continue  # a Query may have stopped at its page size: read on
                await pace.wait(listener, deadline - now)
                hints = listener.take()

    async def get_task(self, task_id: str) -> tuple[TaskRecord, bytes | None]:
        task = await self.io(self.tasks.get, task_id, self.clock())
        result = await self.io(self.tasks.result, task) if task.state.done else None
        return task, result

    async def sweep(self) -> dict[str, int]:
        """Liveness, retention and leases (see natrelay.sweep)."""
        return await Sweeper(self).run()

    async def cancel(self, task_id: str, why: str = "the client went away") -> None:
        now = self.clock()
        try:
            await self.io(
                self.tasks.finish,
                task_id,
                TaskState.CANCELLED,
                {"message": f"task {task_id} was cancelled: {why}", "code": "cancelled"},
                now,
                now + self.settings.result_retention_seconds,
            )
        except (ConditionFailedError, RelayError):
            return
        self.signals.notify(f"task:{task_id}")


def _from_hints(hints: list[object], cursor: int, last: TaskRecord | None) -> StreamRead | None:
    """What a stream reader can take from in-process hints without a Query, if anything.

    Only a gap-free run of chunks after the cursor counts, and only while the task's
    state is known: the last read, or a finished task record handed over with them.
    """
    chunks = sorted((h for h in hints if isinstance(h, Chunk)), key=lambda c: c.seq)
    run: list[Chunk] = []
    for chunk in chunks:
        if chunk.seq == cursor + len(run) + 1:
            run.append(chunk)
    done = [h for h in hints if isinstance(h, TaskRecord) and h.state.done]
    if done:
        final = done[-1]
        if cursor + len(run) + 1 >= final.chunk_count:
            return StreamRead(chunks=run, task=final, complete=True)
        return None
    if run and last is not None and not last.state.done:
        return StreamRead(chunks=run, task=last, complete=True)
    return None
