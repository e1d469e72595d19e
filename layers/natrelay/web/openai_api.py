"""The OpenAI-compatible surface under /v1: models and chat completions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.errors import InvalidRequestError
from natrelay.service import RelayService
from natrelay.store import LlmRecord
from natrelay.web.requests import parse, read_json
from natrelay.web.sse import SSE_HEADERS, open_chat_stream


class ChatRequest(BaseModel):
    """What the relay must understand of a chat request; everything else passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


def model_object(row: LlmRecord) -> dict[str, Any]:
    return {
        "id": row.name,
        "object": "model",
        "created": int(row.created_at or 0),
        "owned_by": "natrelay",
        "status": row.status.value,
        "tier": row.tier,
        "description": row.description,
    }


async def list_models(request: Request, service: RelayService) -> Response:
    rows = await service.serving_llms()
    return JSONResponse({"object": "list", "data": [model_object(r) for r in rows]})


async def get_model(request: Request, service: RelayService) -> Response:
    row = await service.get_llm(request.path_params["model"])
    return JSONResponse(model_object(row))


async def run_chat(service: RelayService, body: dict[str, Any]) -> Response:
    chat = parse(ChatRequest, body)
    task = await service.submit(chat.model, body, stream=chat.stream)
    if chat.stream:
        return StreamingResponse(
            await open_chat_stream(service, task, service.settings.stream_timeout_seconds),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    done = await service.wait(task.id, service.settings.request_timeout_seconds, fresh=True)
    outcome = await service.outcome(done)
    return JSONResponse(outcome.body, status_code=outcome.status)


async def chat_completions(request: Request, service: RelayService) -> Response:
    body = await read_json(request, service.settings)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return await run_chat(service, body)
