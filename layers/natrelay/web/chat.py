"""Running a chat request through the relay: submit, then wait or stream."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.observe import bind
from natrelay.service import Principal, Relay
from natrelay.web.requests import parse
from natrelay.web.sse import SSE_HEADERS, open_chat_stream


class ChatRequest(BaseModel):
    """What the relay must understand of a chat request; everything else passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


async def run_chat(relay: Relay, principal: Principal, body: dict[str, Any]) -> Response:
    chat = parse(ChatRequest, body)
    bind(model=chat.model)
    started = relay.clock()
    task = await relay.queue.submit(principal, chat.model, body, stream=chat.stream)
    if chat.stream:
        return StreamingResponse(
            await open_chat_stream(relay, task, relay.settings.stream_timeout_seconds, started),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    done = await relay.waiting.wait(task.id, relay.settings.request_timeout_seconds, fresh=True)
    outcome = await relay.waiting.outcome(done)
    if done.claimed_at is not None and done.updated_at is not None:
        # what the publisher and its backend took is the time from claim to result
        backend = done.updated_at - done.claimed_at
        relay.metrics.added_latency(max(0.0, relay.clock() - started - backend))
    return JSONResponse(outcome.body, status_code=outcome.status)
