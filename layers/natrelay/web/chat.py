"""Relaying a request for endpoint E of model M: submit, then wait or stream."""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from natrelay.errors import InvalidRequestError
from natrelay.observe import bind
from natrelay.service import Principal, Relay
from natrelay.service.agent_bodies import dressed
from natrelay.service.metering import usage_hidden
from natrelay.store import LlmRecord, TaskRecord
from natrelay.web.abandon import Gone, wait_or_abandon
from natrelay.web.agents import through_agent
from natrelay.web.endpoints import ENDPOINTS, ChatRequest
from natrelay.web.fallbacks import Serve, with_fallbacks
from natrelay.web.live_keys import while_key_lives
from natrelay.web.public import public_answer
from natrelay.web.requests import parse
from natrelay.web.sse import SSE_HEADERS, open_stream, stream_error
from natrelay.wire import Endpoint

__all__ = ["ChatRequest", "InferRequest", "idempotency_key", "relay_request", "run_chat"]


class InferRequest(BaseModel):
    """A chat request for the LLM the path names (its `model` is replaced by it)."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, if it sent one (400 if unusable)."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidRequestError(
            f"{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            param=IDEMPOTENCY_KEY,
        )
    return key


async def submit(
    relay: Relay,
    principal: Principal,
    name: str,
    body: dict[str, Any],
    *,
    stream: bool,
    key: str | None,
    endpoint: Endpoint = Endpoint.CHAT,
    fast: bool = True,
    agent: str | None = None,
    received: float | None = None,
) -> tuple[TaskRecord, bool]:
    """Queue the request; with an Idempotency-Key, the key's first task if there is one
    (True: an earlier request started it). Without `fast` it never takes the fast path
    (an async request: its task must be durable from the start). `agent`: the agent
    the client called (its answer names it). `received`: when the relay began on it (its
    timeline's start)."""
    queue = relay.queue
    if key is None:
        task = await queue.submit(
            principal,
            name,
            body,
            stream=stream,
            endpoint=endpoint,
            fast=fast,
            agent=agent,
            received=received,
        )
        return task, False
    return await queue.submit_once(
        principal,
        name,
        body,
        stream=stream,
        key=key,
        endpoint=endpoint,
        agent=agent,
        received=received,
    )


async def relay_request(
    relay: Relay,
    principal: Principal,
    endpoint: Endpoint,
    body: dict[str, Any],
    key: str | None = None,
    *,
    gone: Gone | None = None,
) -> Response:
    """Relay `body`, a request to `endpoint` of the model it names, and answer it: the
    backend's JSON, or its stream as server-sent events. `gone`: resolves when the client
    hangs up (its task is then cancelled; web.abandon)."""
    parsed = parse(ENDPOINTS[endpoint].request, body)
    # embeddings never stream (a `stream` field there passes through, unread)
    stream = "stream" in type(parsed).model_fields and bool(getattr(parsed, "stream", False))
    bind(model=parsed.model)
    started = relay.clock()

    def serving(sent: dict[str, Any], who: Principal, agent: str | None = None) -> Serve:
        async def serve(row: LlmRecord) -> Response:
            if row.public:
                # the upstream's path for the endpoint, under its baseUrl (ending in /v1)
                path = endpoint.path.removeprefix("/v1")
                return await public_answer(relay, who, row, path, sent, stream=stream, shown=agent)
            return await _published(
                relay,
                who,
                row.name,
                sent,
                endpoint,
                stream=stream,
                key=key,
                started=started,
                gone=gone,
                agent=agent,
            )

        return serve

    row = await relay.catalog.get(principal, parsed.model)
    if row.agent is None:
        return await with_fallbacks(
            relay, principal, parsed.model, serving(body, principal), row=row
        )
    spec = row.agent
    return await through_agent(
        relay,
        principal,
        row,
        endpoint,
        lambda target, who: serving(dressed(spec, endpoint, body, target.name), who, row.name),
        key=key,
    )


async def _published(
    relay: Relay,
    principal: Principal,
    name: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    *,
    stream: bool,
    key: str | None,
    started: float,
    gone: Gone | None = None,
    agent: str | None = None,
) -> Response:
    """A published row's answer: its task, waited for or streamed."""
    task, earlier = await submit(
        relay,
        principal,
        name,
        body,
        stream=stream,
        key=key,
        endpoint=endpoint,
        agent=agent,
        received=started,
    )
    if stream:
        budget = relay.settings.stream_timeout_seconds
        frames = await open_stream(
            relay,
            task,
            budget,
            fresh=not earlier,
            started=started,
            hide_usage=usage_hidden(endpoint, body),
        )
        return StreamingResponse(
            while_key_lives(relay, principal, frames, partial(stream_error, task.endpoint)),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    s = relay.settings
    budget = s.request_timeout_seconds
    if task.wake_id:  # hold through the cold start: up to the wake's own window
        budget = min(max(budget, task.lease_seconds), max(s.max_hold_seconds, budget))
    # with an Idempotency-Key the client can come back for it: keep it
    done = await wait_or_abandon(
        relay, task, budget, fresh=not earlier, keep=key is not None, gone=gone
    )
    outcome = await relay.waiting.outcome(done)
    if done.claimed_at is not None and done.updated_at is not None:
        # what the publisher and its backend took is the time from claim to result
        backend = done.updated_at - done.claimed_at
        relay.metrics.added_latency(max(0.0, relay.clock() - started - backend))
    return JSONResponse(outcome.body, status_code=outcome.status)


async def run_chat(
    relay: Relay,
    principal: Principal,
    body: dict[str, Any],
    key: str | None = None,
    *,
    gone: Gone | None = None,
) -> Response:
    return await relay_request(relay, principal, Endpoint.CHAT, body, key, gone=gone)
