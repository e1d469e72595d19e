"""Routes under /api/v1: publisher sessions and tasks, LLM rows, async tasks."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.service import Principal, Relay
from natrelay.service.agent_bodies import dressed
from natrelay.store import LlmRecord, TaskRecord
from natrelay.web import views
from natrelay.web.abandon import client_gone
from natrelay.web.agents import through_agent
from natrelay.web.chat import InferRequest, idempotency_key, run_chat, submit
from natrelay.web.fallbacks import Serve, with_fallbacks
from natrelay.web.live_keys import while_key_lives
from natrelay.web.requests import caller, parse, read_model, read_object
from natrelay.web.sse import SSE_HEADERS, parse_event_id, stream_error, task_events_body
from natrelay.wire import (
    SESSION_HEADER,
    ApplyResult,
    ChunkAck,
    ChunkBatch,
    Endpoint,
    HeartbeatRequest,
    LlmApply,
    LlmList,
    PollRequest,
    PollResponse,
    RegisterRequest,
    Role,
    SessionRequest,
    SessionResponse,
    TaskResult,
    WireModel,
)


def answer(model: WireModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A wire model as the JSON response body (camelCase, no nulls)."""
    return JSONResponse(
        model.model_dump(mode="json", by_alias=True, exclude_none=True),
        status_code=status,
        headers=headers,
    )


# --- publisher (publish right) ---------------------------------------------------------


async def register(request: Request, relay: Relay) -> Response:
    req = await read_model(request, relay.settings, RegisterRequest)
    registration = await relay.sessions.register(caller(request), req)
    return answer(views.session_response(registration, relay.clock(), relay.settings))


async def heartbeat(request: Request, relay: Relay) -> Response:
    req = await read_model(request, relay.settings, HeartbeatRequest)
    if req.work:  # its answer names no rows: only what to stop
        told = await relay.sessions.work_beat(caller(request), req)
        view = SessionResponse(provider_session_id=req.provider_session_id, llms=[])
    else:
        registration = await relay.sessions.heartbeat(caller(request), req)
        told = list(registration.cancelled)
        view = views.session_response(registration, relay.clock(), relay.settings)
    cancelled = await relay.abandoned.of(req.provider_session_id, req.running, told)
    return answer(view.model_copy(update={"cancelled": cancelled or None}))


async def _polled(relay: Relay, req: PollRequest, tasks: list[TaskRecord]) -> Response:
    cancelled = await relay.abandoned.of(req.provider_session_id, req.running)
    polled = [views.polled_task(t) for t in tasks]
    return answer(PollResponse(tasks=polled, cancelled=cancelled or None))


async def poll(request: Request, relay: Relay) -> Response:
    req = await read_model(request, relay.settings, PollRequest)
    tasks = await relay.claims.poll(caller(request), req, gone=request.is_disconnected)
    return await _polled(relay, req, tasks)


async def claim(request: Request, relay: Relay) -> Response:
    """A poll that does not wait (the doorbell's), whatever waitSeconds says."""
    req = await read_model(request, relay.settings, PollRequest)
    tasks = await relay.claims.poll(caller(request), req.model_copy(update={"wait_seconds": 0}))
    return await _polled(relay, req, tasks)


async def deregister(request: Request, relay: Relay) -> Response:
    req = await read_model(request, relay.settings, SessionRequest)
    registration = await relay.sessions.deregister(caller(request), req)
    return answer(views.session_response(registration, relay.clock()))


async def task_request(request: Request, relay: Relay) -> Response:
    """The claiming session comes in the X-Natrelay-Session header (older publishers: in
    the query, which access logs show; web.middleware keeps it out of them)."""
    session = request.headers.get(SESSION_HEADER) or request.query_params.get(
        "providerSessionId", ""
    )
    body = await relay.claims.task_request(caller(request), request.path_params["task_id"], session)
    return Response(body, media_type="application/json")


async def post_chunks(request: Request, relay: Relay) -> Response:
    batch = await read_model(request, relay.settings, ChunkBatch)
    seq = await relay.claims.post_chunks(caller(request), request.path_params["task_id"], batch)
    return answer(ChunkAck(seq=seq))


async def post_result(request: Request, relay: Relay) -> Response:
    result = await read_model(request, relay.settings, TaskResult)
    task = await relay.claims.post_result(caller(request), request.path_params["task_id"], result)
    await relay.pools.learn_not_served(task, result.provider_session_id)
    return answer(views.task_view(task))


# --- clients (client right) ------------------------------------------------------------


async def list_llms(request: Request, relay: Relay) -> Response:
    now = relay.clock()
    principal = caller(request)
    rows = await relay.catalog.all(principal)
    statuses = [relay.catalog.status(r) for r in rows]
    catalog = relay.catalog
    admin = principal.role is Role.ADMIN
    return answer(
        LlmList(
            data=[
                views.row_view(r, now, st, catalog.endpoints(r), admin=admin)
                for r, st in zip(rows, statuses, strict=True)
            ]
        )
    )


async def get_llm(request: Request, relay: Relay) -> Response:
    principal = caller(request)
    pool = await relay.catalog.pool(principal, request.path_params["name"])
    return answer(views.pool_view(pool, relay.clock(), admin=principal.role is Role.ADMIN))


async def apply_llms(request: Request, relay: Relay) -> Response:
    """Create or change rows from documents (admins): all of them, or none."""
    req = await read_model(request, relay.settings, LlmApply)
    return answer(ApplyResult(data=await relay.rows.apply(list(req.documents))))


async def delete_llm(request: Request, relay: Relay) -> Response:
    await relay.catalog.delete(request.path_params["name"])
    return Response(status_code=204)


async def infer(request: Request, relay: Relay) -> Response:
    """A chat-completions body for the named LLM; `Prefer: respond-async` answers 202."""
    body = await read_object(request, relay.settings)
    body.pop("model", None)
    parse(InferRequest, body)
    body["model"] = request.path_params["name"]
    key = idempotency_key(request)
    prefer = {p.strip().lower() for p in request.headers.get("prefer", "").split(",")}
    if "respond-async" in prefer:
        principal = caller(request)

        def queueing(sent: dict[str, Any], who: Principal, agent: str | None = None) -> Serve:
            async def queue(row: LlmRecord) -> Response:
                stream = bool(sent.get("stream"))
                task, _ = await submit(
                    relay, who, row.name, sent, stream=stream, key=key, fast=False,
                    agent=agent,
                )  # fmt: skip
                return answer(
                    views.task_view(task),
                    status=202,
                    headers={
                        "Location": f"/api/v1/tasks/{task.id}",
                        "Preference-Applied": "respond-async",
                    },
                )

            return queue

        row = await relay.catalog.get(principal, body["model"])
        if row.agent is None:
            return await with_fallbacks(
                relay, principal, body["model"], queueing(body, principal), queued=True, row=row
            )
        spec = row.agent
        return await through_agent(
            relay,
            principal,
            row,
            Endpoint.CHAT,
            lambda target, who: queueing(
                dressed(spec, Endpoint.CHAT, body, target.name), who, row.name
            ),
            queued=True,
            key=key,
        )
    return await run_chat(relay, caller(request), body, key, gone=client_gone(request))


async def get_task(request: Request, relay: Relay) -> Response:
    task, result = await relay.waiting.get_with_result(
        request.path_params["task_id"], caller(request)
    )
    position = await relay.waiting.queue_position(task)
    return answer(views.task_view(task, result, position))


async def cancel_task(request: Request, relay: Relay) -> Response:
    task_id = request.path_params["task_id"]
    await relay.waiting.get_for(caller(request), task_id)
    await relay.endings.cancel(task_id, "cancelled by the client")
    task, result = await relay.waiting.get_with_result(task_id)
    return answer(views.task_view(task, result))


async def task_events(request: Request, relay: Relay) -> Response:
    task_id = request.path_params["task_id"]
    task = await relay.waiting.get_for(caller(request), task_id)  # 404 before the stream starts
    last = parse_event_id(request.headers.get("last-event-id") or request.query_params.get("after"))
    events = task_events_body(relay, task, last, relay.settings.stream_timeout_seconds)
    return StreamingResponse(
        while_key_lives(relay, caller(request), events, partial(stream_error, Endpoint.CHAT)),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
