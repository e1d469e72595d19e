"""Server-sent events: answer streams (chat and the other endpoints) and resumable task
event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio

from natrelay.errors import RelayError, TaskTimeoutError
from natrelay.service import Relay
from natrelay.service.metering import without_usage
from natrelay.service.payloads import loads_stored, public_model
from natrelay.store import Chunk, TaskRecord
from natrelay.web.endpoints import spec_of
from natrelay.web.errors import anthropic_body, error_body, status_of
from natrelay.web.ticking import Tick, next_item, ticking
from natrelay.web.views import task_view
from natrelay.wire import Endpoint

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def _cancel_unless_done(relay: Relay, task_id: str, done: bool) -> None:
    if not done:
        with anyio.CancelScope(shield=True):
            await relay.endings.cancel(task_id)


# A stream still waiting for its first chunk after a while (queued behind busy members,
# or waiting for a wake) answers 200 anyway and keeps the connection alive with SSE
# comments every `stream_keepalive_seconds`: proxies that cut idle connections (100 s at
# Cloudflare and nginx's default) must never drop it.
OPEN_WITHIN_SECONDS = 10.0
KEEPALIVE = ": waiting for the backend\n\n"


async def open_stream(
    relay: Relay,
    task: TaskRecord,
    budget: float,
    *,
    fresh: bool = True,
    started: float | None = None,
    hide_usage: bool = False,
) -> AsyncIterator[str]:
    """Wait a little for the first chunk before answering, so that a task that fails
    early is a plain HTTP error (502, 503, 504), not a 200 followed by an error event.
    Raises that error; otherwise returns the SSE body. A stream whose first chunk is
    slow to come (a queue, a wake) answers anyway, with keep-alive comments.

    `fresh`: the task was just submitted (not found by its Idempotency-Key).
    `hide_usage`: the relay asked the backend for the stream's usage, the client did not
    (service.metering)."""
    chunks = relay.waiting.stream(task.id, budget=budget, submitted=task if fresh else None)
    first = next_item(chunks)
    keepalive = relay.settings.stream_keepalive_seconds
    done, _ = await asyncio.wait({first}, timeout=min(OPEN_WITHIN_SECONDS, keepalive))
    if first in done and first.exception() is not None:
        await chunks.aclose()
        first.result()  # raises the task's error
    t0 = started or task.created_at
    paced = _paced(chunks, first, relay, t0, keepalive)
    return answer_stream(relay, task, paced, hide_usage=hide_usage)


async def _paced(
    chunks: AsyncGenerator[Chunk, None],
    pending: asyncio.Future[Any],
    relay: Relay,
    started: float,
    every: float,
) -> AsyncIterator[Chunk | None]:
    """The chunks, and None whenever `every` seconds pass without one."""
    first = True
    items = ticking(chunks, every, pending)
    try:
        async for item in items:
            if isinstance(item, Tick):
                yield None
                continue
            if first:
                relay.metrics.first_token(max(0.0, relay.clock() - started))
                first = False
            yield item
    finally:
        with anyio.CancelScope(shield=True):
            await items.aclose()  # closes the chunks too


def _objects(chunk: Chunk, name: str) -> list[Any]:
    """A stored chunk batch as the client sees it: naming the relay's model."""
    return [public_model(obj, name) for obj in loads_stored(chunk.data)]


def _event(obj: Any) -> str:
    """A named event: `event: <its type>` (the Responses and Messages APIs name each
    event by its data's `type`), then its data."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    named = isinstance(kind, str) and kind.isprintable()
    return (f"event: {kind}\n" if named else "") + _data(obj)


def stream_error(endpoint: str, exc: RelayError) -> str:
    """A failure midway, as each API's clients read one: an `error` event of the
    Messages API; of the Responses API (its fields, and `error` too, which the openai
    SDK raises); an error chunk of the chat and completions streams."""
    body = error_body(exc)
    if endpoint == Endpoint.MESSAGES:
        return _event(anthropic_body(body, status_of(exc)))
    if endpoint == Endpoint.RESPONSES:
        error = body["error"]
        return _event({**error, "type": "error", "error": error})
    return _data(body)


async def answer_stream(
    relay: Relay,
    task: TaskRecord,
    chunks: AsyncIterator[Chunk | None],
    *,
    hide_usage: bool = False,
) -> AsyncIterator[str]:
    """Each event the backend sent, framed as its API frames them (chat and completions:
    `data: <chunk>`, then `data: [DONE]`; responses and messages: `event:` and `data:`);
    a comment while nothing comes for a while.

    A client that goes away cancels the task, so the publisher stops the backend.
    """
    named = spec_of(task.endpoint).named_events
    frame = _event if named else _data
    done = False
    try:
        async for chunk in chunks:
            if chunk is None:
                yield KEEPALIVE
                continue
            for obj in _objects(chunk, task.shown):
                shown = without_usage(obj) if hide_usage else obj
                if shown is not None:
                    yield frame(shown)
        done = True
        if not named:
            yield "data: [DONE]\n\n"
    except RelayError as exc:
        done = not isinstance(exc, TaskTimeoutError)
        yield stream_error(task.endpoint, exc)
    finally:
        await _cancel_unless_done(relay, task.id, done)


# The names of before other endpoints were relayed.
open_chat_stream = open_stream
chat_stream = answer_stream


def parse_event_id(value: str | None) -> tuple[int, int]:
    """`<seq>:<index>` of the last event seen; (-1, -1) for none or garbage."""
    if not value:
        return -1, -1
    seq, _, index = value.partition(":")
    try:
        return int(seq), int(index or -1)
    except ValueError:
        return -1, -1


async def task_events_body(
    relay: Relay, task: TaskRecord, last: tuple[int, int], budget: float
) -> AsyncIterator[str]:
    """Each chunk as an event with id `<seq>:<index>`; a final `end` event with the task.

    Resuming with Last-Event-ID repeats nothing and skips nothing. A stream cut by the
    budget has no `end` event: reconnect with the last id.
    """
    seq, index = last
    task_id = task.id
    try:
        # re-read the batch of the last event seen; its events up to `index` are skipped
        async for chunk in relay.waiting.stream(task_id, after_seq=max(seq - 1, -1), budget=budget):
            for i, obj in enumerate(_objects(chunk, task.shown)):
                if chunk.seq == seq and i <= index:
                    continue
                yield f"id: {chunk.seq}:{i}\n" + _data(obj)
    except TaskTimeoutError:
        return
    except RelayError:
        pass  # the end event carries the error
    task, result = await relay.waiting.get_with_result(task_id)
    view = task_view(task, result)
    yield "event: end\n" + _data(view.model_dump(mode="json", by_alias=True, exclude_none=True))
