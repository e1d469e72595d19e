"""Routes under /api/v1: publisher sessions and tasks, LLM rows, async tasks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.errors import InvalidRequestError
from natrelay.service import RelayService
from natrelay.web.openai_api import run_chat
from natrelay.web.requests import read_json, read_model
from natrelay.web.sse import SSE_HEADERS, parse_event_id, task_events
from natrelay.wire import (
    ChunkBatch,
    HeartbeatRequest,
    LlmList,
    PollRequest,
    PollResponse,
    RegisterRequest,
    SessionRequest,
    TaskResult,
    WireModel,
)


def wire(model: WireModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        model.model_dump(mode="json", by_alias=True, exclude_none=True),
        status_code=status,
        headers=headers,
    )


# --- publisher (publish right) ---------------------------------------------------------


async def register(request: Request, service: RelayService) -> Response:
    req = await read_model(request, service.settings, RegisterRequest)
    return wire(await service.register(req))


async def heartbeat(request: Request, service: RelayService) -> Response:
    req = await read_model(request, service.settings, HeartbeatRequest)
    return wire(await service.heartbeat(req))


async def poll(request: Request, service: RelayService) -> Response:
    req = await read_model(request, service.settings, PollRequest)
    return wire(PollResponse(tasks=await service.poll(req, gone=request.is_disconnected)))


async def deregister(request: Request, service: RelayService) -> Response:
    req = await read_model(request, service.settings, SessionRequest)
    return wire(await service.deregister(req))


async def task_request(request: Request, service: RelayService) -> Response:
    body = await service.task_request(request.path_params["task_id"])
    return Response(body, media_type="application/json")


async def post_chunks(request: Request, service: RelayService) -> Response:
    batch = await read_model(request, service.settings, ChunkBatch)
    return wire(await service.post_chunks(request.path_params["task_id"], batch))


async def post_result(request: Request, service: RelayService) -> Response:
    result = await read_model(request, service.settings, TaskResult)
    return wire(await service.post_result(request.path_params["task_id"], result))


# --- clients (client right) ------------------------------------------------------------


async def list_llms(request: Request, service: RelayService) -> Response:
    return wire(LlmList(data=await service.list_llms()))


async def get_llm(request: Request, service: RelayService) -> Response:
    return wire(service.row_view(await service.get_llm(request.path_params["name"])))


async def delete_llm(request: Request, service: RelayService) -> Response:
    await service.delete_llm(request.path_params["name"])
    return Response(status_code=204)


async def infer(request: Request, service: RelayService) -> Response:
    """A chat-completions body for the named LLM; `Prefer: respond-async` answers 202."""
    body = await read_json(request, service.settings)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    body["model"] = request.path_params["name"]
    prefer = {p.strip().lower() for p in request.headers.get("prefer", "").split(",")}
    if "respond-async" in prefer:
        task = await service.submit(body["model"], body, stream=bool(body.get("stream", False)))
        location = f"/api/v1/tasks/{task.id}"
        return wire(
            service.task_view(task),
            status=202,
            headers={"Location": location, "Preference-Applied": "respond-async"},
        )
    return await run_chat(service, body)


async def get_task(request: Request, service: RelayService) -> Response:
    task, result = await service.get_task(request.path_params["task_id"])
    return wire(service.task_view(task, result))


async def cancel_task(request: Request, service: RelayService) -> Response:
    task_id = request.path_params["task_id"]
    await service.get_task(task_id)
    await service.cancel(task_id, "cancelled by the client")
    task, result = await service.get_task(task_id)
    return wire(service.task_view(task, result))


async def task_events_route(request: Request, service: RelayService) -> Response:
    task_id = request.path_params["task_id"]
    await service.get_task(task_id)  # 404 before the stream starts
    last = parse_event_id(request.headers.get("last-event-id") or request.query_params.get("after"))
    return StreamingResponse(
        task_events(service, task_id, last, service.settings.stream_timeout_seconds),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
