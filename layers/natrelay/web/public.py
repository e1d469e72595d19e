"""A public row's answer: the relay calls its upstream (natrelay.service.upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.errors import RelayError
from natrelay.service import Principal, Relay
from natrelay.service.payloads import public_model
from natrelay.store import LlmRecord
from natrelay.web.errors import error_body
from natrelay.web.live_keys import while_key_lives
from natrelay.web.sse import SSE_HEADERS, _data


async def public_answer(
    relay: Relay,
    principal: Principal,
    row: LlmRecord,
    path: str,
    body: dict[str, Any],
    *,
    stream: bool,
    shown: str | None = None,
) -> Response:
    """The upstream's answer to an OpenAI request for `path` (e.g. `/chat/completions`):
    JSON, or server-sent events passed through chunk by chunk. An upstream that fails
    before answering raises (UpstreamError), so the client gets a plain HTTP error."""
    started = relay.clock()
    reply = await relay.upstreams.relay(principal, row, path, body, stream=stream)
    name = shown or row.name  # an agent's answer names the agent
    if reply.chunks is None:
        after = BackgroundTask(reply.settle) if reply.settle is not None else None
        body = public_model(reply.body, name)
        return JSONResponse(body, status_code=reply.status, background=after)
    frames = _events(relay, reply.chunks, started, name)
    return StreamingResponse(
        while_key_lives(relay, principal, frames, _error_event),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


def _error_event(exc: RelayError) -> str:
    return _data(error_body(exc))


async def _events(
    relay: Relay, chunks: AsyncIterator[Any], started: float, name: str
) -> AsyncIterator[str]:
    first = True
    try:
        async for obj in chunks:
            if first:
                relay.metrics.first_token(max(0.0, relay.clock() - started))
                first = False
            yield _data(public_model(obj, name))
        yield "data: [DONE]\n\n"
    except RelayError as exc:
        yield _error_event(exc)
