"""The fake backend's APIs beyond chat: `/v1/completions`, `/v1/embeddings`,
`/v1/responses` and Anthropic's `/v1/messages`, plain and streamed.

Answers are deterministic (fixed ids and times) so a test can call the backend directly
and through the relay and compare what each client read. The answer is the backend's
`reply` (or the prompt, when `echo`), one word an event when streamed, `interval` s apart.
Responses and messages stream named events (`event: <type>`) and no `[DONE]`, as the
real APIs do; messages also sends a `ping`. Model `truncate` streams all but the last
event and no `[DONE]` (a backend that died midway).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from tests.support.backend import FakeBackend

Events = list[tuple[str | None, dict[str, Any]]]


def _prompt_text(endpoint: str, body: dict[str, Any]) -> str:
    if endpoint == "completions":
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else str((prompt or [""])[0])
    if endpoint == "responses":
        given = body.get("input")
        if isinstance(given, str):
            return given
        content = (given or [{}])[-1].get("content", "")
    else:
        content = (body.get("messages") or [{}])[-1].get("content", "")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _vector(text: str, dims: int) -> list[float]:
    return [round(((len(text) + i) % 7) / 7 - 0.5, 3) for i in range(dims)]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    texts = [given] if isinstance(given, str) else list(given or [])
    dims = int(body.get("dimensions") or 4)
    data = []
    for i, text in enumerate(texts):
        vector: Any = _vector(str(text), dims)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)}
    return {"object": "list", "data": data, "model": body.get("model"), "usage": usage}


def completion(model: Any, text: str, finish: str | None, usage: Any = None) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    answer = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": 1,
        "model": model,
        "choices": [choice],
    }
    return {**answer, "usage": usage} if usage is not None else answer


def response(model: Any, text: str, status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant"}
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": model,
        "output": [{**item, "content": [part]}] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7} if done else None,
    }


def message(model: Any, text: str, done: bool = True) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if done else [],
        "stop_reason": "end_turn" if done else None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2 if done else 1},
    }


def _response_events(model: Any, pieces: list[str]) -> Events:
    at = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response(model, "", "in_progress")},
        *({"type": "response.output_text.delta", **at, "delta": p} for p in pieces),
        {"type": "response.output_text.done", **at, "text": "".join(pieces)},
        {"type": "response.completed", "response": response(model, "".join(pieces))},
    ]
    return [(e["type"], {**e, "sequence_number": i}) for i, e in enumerate(events)]


def _message_events(model: Any, pieces: list[str]) -> Events:
    block = {"type": "text", "text": ""}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message(model, "", done=False)},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    return [(e["type"], e) for e in events]


def _completion_events(model: Any, pieces: list[str]) -> Events:
    events: Events = [(None, completion(model, p, None)) for p in pieces]
    usage = {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}
    events.append((None, completion(model, "", "stop", usage)))
    return events


STREAMS: dict[str, Callable[[Any, list[str]], Events]] = {
    "completions": _completion_events,
    "responses": _response_events,
    "messages": _message_events,
}


class ApiRoutes:
    """The handlers of one FakeBackend for the endpoints beyond chat."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def handler(self, endpoint: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            return await self._handle(endpoint, request)

        return handle

    async def _handle(self, endpoint: str, request: Request) -> Response:
        backend = self.backend
        raw = await request.body()
        backend.raw.append((endpoint, raw))
        if endpoint in backend.missing:
            return JSONResponse({"detail": "Not Found"}, 404)
        if backend.asleep:
            return JSONResponse({"error": {"message": "asleep"}}, 503)
        body = json.loads(raw)
        backend.requests.append(body)
        model = body.get("model")
        if endpoint == "embeddings":
            return JSONResponse(embeddings(body))
        prompt = _prompt_text(endpoint, body)
        pieces = backend.pieces() if not backend.echo else [prompt]
        if body.get("stream"):
            events = STREAMS[endpoint](model, pieces)
            if model == "truncate":  # the body just stops: no last event, no [DONE]
                frames = self._frames(events[:-1], named=True)
            else:
                frames = self._frames(events, named=endpoint != "completions")
            return StreamingResponse(frames, media_type="text/event-stream")
        text = "".join(pieces)
        if endpoint == "completions":
            return JSONResponse(completion(model, text, "stop", backend.usage()))
        if endpoint == "responses":
            return JSONResponse(response(model, text))
        return JSONResponse(message(model, text))

    async def _frames(self, events: Events, named: bool) -> AsyncIterator[str]:
        backend = self.backend
        try:
            for i, (name, data) in enumerate(events):
                if i:
                    await asyncio.sleep(backend.interval)
                backend.produced_at.append(time.monotonic())
                head = f"event: {name}\n" if name is not None else ""
                yield f"{head}data: {json.dumps(data)}\n\n"
            if not named:
                yield "data: [DONE]\n\n"
            backend.finished.set()
        except (asyncio.CancelledError, GeneratorExit):
            backend.aborted.set()
            raise
