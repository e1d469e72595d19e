"""A scripted relay for the publisher tests, speaking through the wire models.

The test decides which tasks each poll hands out and how the task endpoints answer, and
can read every call afterwards (poll sizes, ordering, statuses: what the real relay cannot
easily show). Requests are parsed with the models of `natrelay.wire` (a field the relay
would refuse is refused here too, and listed in `invalid`), answers are built from them,
and routes come from `Paths`: a drift between the publisher and the protocol fails a test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from natrelay.wire import (
    ChunkAck,
    ChunkBatch,
    ErrorCode,
    ErrorInfo,
    HeartbeatRequest,
    LlmRow,
    LlmStatus,
    Paths,
    PolledTask,
    PollRequest,
    PollResponse,
    RegisterRequest,
    SessionRequest,
    SessionResponse,
    TaskKind,
    TaskResult,
    TaskState,
    TaskView,
)

SESSION = "sess-fake-0001"
TOO_LARGE = "a result may be at most 100 bytes"

Event = tuple[float, str, dict[str, Any]]
M = TypeVar("M", bound=BaseModel)


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the relay puts it on the wire."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def error(code: ErrorCode, message: str) -> JSONResponse:
    """An error answer as the relay sends it: its code's status and type."""
    info = ErrorInfo(message=message, type=code.type.value, code=code)
    return JSONResponse({"error": dump(info)}, code.status)


@dataclass
class FakeRelay:
    # Tasks to hand out, in order; a poll takes at most `maxTasks` of them unless
    # `ignore_max_tasks` is set (a relay handing out more than asked, as can happen).
    queue: list[PolledTask] = field(default_factory=list)
    ignore_max_tasks: bool = False
    # Answer empty polls at once instead of waiting (a misbehaving relay).
    instant: bool = False
    register_delay: float = 0.0
    # Answer 409 task_cancelled to chunk batches after the first `cancel_after`; refuse
    # (413) every chunk batch, or results whose body is larger than `max_result_bytes`.
    cancel_after: int | None = None
    refuse_chunks: bool = False
    max_result_bytes: int | None = None
    # Names another session holds: a registration with any of them is refused (409).
    held: set[str] = field(default_factory=set)
    # Work beats asked for (SessionResponse.workBeatSeconds); tasks whose chunks and
    # results are refused 409 task_moved (another member has them); a relay older than
    # work beats (it refuses `workBeats` in a registration, as an unknown field).
    work_beat_seconds: float | None = None
    moved: set[str] = field(default_factory=set)
    knows_work_beats: bool = True
    events: list[Event] = field(default_factory=list)
    # Requests the wire models refused: a publisher bug, or a drift from the protocol.
    invalid: list[str] = field(default_factory=list)
    rows: dict[str, LlmStatus] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *tasks: PolledTask) -> None:
        with self.lock:
            self.queue.extend(tasks)

    def calls(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of the calls of one kind (`register`, `poll`, `chunks`, …), in order.

        Chunk batches and results carry their task id as `task`.
        """
        with self.lock:
            return [body for _, k, body in self.events if k == kind]

    def results(self) -> dict[str, dict[str, Any]]:
        return {body["task"]: body for body in self.calls("result")}

    def text(self) -> str:
        """The streamed content of every chunk batch, joined."""
        return "".join(
            (choice.get("delta") or {}).get("content") or ""
            for batch in self.calls("chunks")
            for chunk in batch["chunks"]
            for choice in chunk.get("choices", [])
        )

    def clear(self) -> None:
        with self.lock:
            self.events.clear()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(Paths.REGISTER, self._register, methods=["POST"]),
                Route(Paths.HEARTBEAT, self._heartbeat, methods=["POST"]),
                Route(Paths.POLL, self._poll, methods=["POST"]),
                Route(Paths.DEREGISTER, self._deregister, methods=["POST"]),
                Route(Paths.TASK_CHUNKS, self._chunks, methods=["POST"]),
                Route(Paths.TASK_RESULT, self._result, methods=["POST"]),
            ],
            exception_handlers={ValidationError: self._refuse},
        )

    async def _read(self, request: Request, kind: str, model: type[M]) -> M:
        """Parse a request with its wire model, and record it (as sent) once it is valid."""
        body = json.loads(await request.body())
        parsed = model.model_validate(body)
        if "task_id" in request.path_params:
            body = {**body, "task": request.path_params["task_id"]}
        with self.lock:
            self.events.append((time.monotonic(), kind, body))
        return parsed

    async def _refuse(self, request: Request, exc: Exception) -> Response:
        self.invalid.append(f"{request.url.path}: {exc}")
        return error(ErrorCode.INVALID_REQUEST, str(exc))

    def _session(self) -> JSONResponse:
        llms = [
            LlmRow(
                name=name,
                kind="virtual",
                type="echo",
                model="echo",
                status=status,
                provider_session_id=SESSION,
            )
            for name, status in self.rows.items()
        ]
        answer = SessionResponse(
            provider_session_id=SESSION, llms=llms, work_beat_seconds=self.work_beat_seconds
        )
        return JSONResponse(dump(answer))

    async def _register(self, request: Request) -> Response:
        body = await self._read(request, "register", RegisterRequest)
        if body.work_beats and not self.knows_work_beats:
            return error(ErrorCode.INVALID_REQUEST, "workBeats: Extra inputs are not permitted")
        await asyncio.sleep(self.register_delay)
        taken = sorted(p.name for p in body.providers if p.name in self.held)
        if taken:
            message = f"LLM name {taken[0]!r} is live under another session of this key"
            return error(ErrorCode.NAME_TAKEN, message)
        self.rows = {p.name: p.initial_status for p in body.providers}
        return self._session()

    async def _heartbeat(self, request: Request) -> Response:
        body = await self._read(request, "heartbeat", HeartbeatRequest)
        self.rows.update(body.statuses)
        return self._session()

    async def _poll(self, request: Request) -> Response:
        body = await self._read(request, "poll", PollRequest)
        deadline = time.monotonic() + (0 if self.instant else body.wait_seconds)
        while True:
            with self.lock:
                take = len(self.queue) if self.ignore_max_tasks else body.max_tasks
                tasks, self.queue[:take] = self.queue[:take], []
            if tasks or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        return JSONResponse(dump(PollResponse(tasks=tasks)))

    async def _deregister(self, request: Request) -> Response:
        await self._read(request, "deregister", SessionRequest)
        self.rows = dict.fromkeys(self.rows, LlmStatus.INACTIVE)
        return self._session()

    async def _chunks(self, request: Request) -> Response:
        batch = await self._read(request, "chunks", ChunkBatch)
        if request.path_params["task_id"] in self.moved:
            return error(ErrorCode.TASK_MOVED, "the task went to another member")
        if self.refuse_chunks:
            return error(ErrorCode.PAYLOAD_TOO_LARGE, TOO_LARGE)
        if self.cancel_after is not None and len(self.calls("chunks")) > self.cancel_after:
            return error(ErrorCode.TASK_CANCELLED, "the client went away")
        return JSONResponse(dump(ChunkAck(seq=batch.seq)))

    async def _result(self, request: Request) -> Response:
        await self._read(request, "result", TaskResult)
        if request.path_params["task_id"] in self.moved:
            return error(ErrorCode.TASK_MOVED, "the task went to another member")
        size = len(await request.body())
        if self.max_result_bytes is not None and size > self.max_result_bytes:
            return error(ErrorCode.PAYLOAD_TOO_LARGE, TOO_LARGE)
        task = TaskView(
            id=request.path_params["task_id"],
            kind=TaskKind.INFER,
            llm="x",
            state=TaskState.COMPLETED,
            created_at="now",
        )
        return JSONResponse(dump(task))


def infer_task(
    task_id: str, llm: str, text: str, *, stream: bool = False, wake_id: str | None = None
) -> PolledTask:
    return PolledTask(
        id=task_id,
        kind=TaskKind.INFER,
        llm=llm,
        created_at="now",
        stream=stream,
        request={"model": llm, "messages": [{"role": "user", "content": text}]},
        request_size=1,
        wake_id=wake_id,
        lease_seconds=60,
    )


def wake_task(task_id: str, llm: str) -> PolledTask:
    return PolledTask(id=task_id, kind=TaskKind.WAKE, llm=llm, created_at="now", lease_seconds=60)
