"""Real HTTP fakes for the publisher tests: backends, a wake controller, a relay's task API.

Each is a small Starlette app served by uvicorn on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = "Hello there,  world!\nBye."


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# --- an OpenAI-compatible backend ------------------------------------------------------


@dataclass
class BackendState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    stream_closed_early: threading.Event = field(default_factory=threading.Event)
    chunks_sent: int = 0
    # Requests being answered now, and the most at once (model `delay` answers after 0.4 s).
    active: int = 0
    max_active: int = 0


def _words(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


def openai_app(state: BackendState) -> Starlette:
    """Behaviour by backend model: `fail-400`, `fail-500`, `bad-json`, `slow`, `break`, `delay`."""

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        model = body.get("model")
        if model == "fail-400":
            return JSONResponse(
                {"error": {"message": "this model does not exist", "type": "invalid"}}, 400
            )
        if model == "fail-500":
            return PlainTextResponse("the GPU caught fire", 500)
        if model == "bad-json":
            return PlainTextResponse("this is not JSON", 200)
        if body.get("stream"):
            return StreamingResponse(_sse(body, state), media_type="text/event-stream")
        if model == "delay":
            state.active += 1
            state.max_active = max(state.max_active, state.active)
            await asyncio.sleep(0.4)
            state.active -= 1
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": REPLY},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
            }
        )

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


async def _sse(body: dict[str, Any], state: BackendState) -> AsyncIterator[str]:
    head = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
    }
    slow = body["model"] == "slow"
    pieces = _words(REPLY) if not slow else [f"w{i} " for i in range(200)]
    try:
        yield ": a comment line the parser must skip\n\n"
        for piece in pieces:
            chunk = {
                **head,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
            state.chunks_sent += 1
            if slow:
                await asyncio.sleep(0.05)
        if body["model"] == "break":
            yield 'data: {"error": {"message": "out of memory", "code": 500}}\n\n'
            return
        stop = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(stop)}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        state.stream_closed_early.set()
        raise


# --- an Ollama backend (native API) ------------------------------------------------------


def ollama_app(state: BackendState) -> Starlette:
    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": "llama3:latest"}, {"name": "qwen2:7b"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        if body["model"] == "missing":
            return JSONResponse({"error": "model 'missing' not found, try pulling it first"}, 404)
        if body.get("stream", True):
            return StreamingResponse(_ndjson(body), media_type="application/x-ndjson")
        return JSONResponse(
            {
                "model": body["model"],
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": REPLY},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 9,
                "eval_count": 5,
            }
        )

    return Starlette(
        routes=[
            Route("/api/tags", tags),
            Route("/api/chat", chat, methods=["POST"]),
        ]
    )


async def _ndjson(body: dict[str, Any]) -> AsyncIterator[str]:
    for piece in _words(REPLY):
        line = {
            "model": body["model"],
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        yield json.dumps(line) + "\n"
    yield (
        json.dumps(
            {
                "model": body["model"],
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 9,
                "eval_count": 5,
            }
        )
        + "\n"
    )


# --- a wake controller (http recipe) and a vLLM with sleep mode ---------------------------


@dataclass
class WakeController:
    awake: bool = False
    wake_calls: list[dict[str, Any]] = field(default_factory=list)
    # Seconds between the wake call and the backend answering.
    boot_seconds: float = 0.0
    woke_at: float = 0.0

    def app(self) -> Starlette:
        async def wake(request: Request) -> Response:
            self.wake_calls.append(
                {
                    "method": request.method,
                    "headers": dict(request.headers),
                    "body": (await request.body()).decode(),
                }
            )
            self.awake, self.woke_at = True, time.monotonic()
            return JSONResponse({"ok": True})

        async def fail(request: Request) -> Response:
            self.wake_calls.append({"method": request.method})
            return PlainTextResponse("the power switch is stuck", 500)

        async def ready(request: Request) -> Response:
            up = self.awake and time.monotonic() - self.woke_at >= self.boot_seconds
            return PlainTextResponse("up" if up else "asleep", 200 if up else 503)

        async def sleep(request: Request) -> Response:
            self.awake = False
            return PlainTextResponse("sleeping")

        return Starlette(
            routes=[
                Route("/wake", wake, methods=["POST", "PUT", "GET"]),
                Route("/fail", fail, methods=["POST"]),
                Route("/ready", ready),
                Route("/sleep", sleep, methods=["POST"]),
            ]
        )


@dataclass
class FakeVllm:
    sleeping: bool = True
    calls: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def sleep(request: Request) -> Response:
            self.calls.append(f"sleep level={request.query_params.get('level')}")
            self.sleeping = True
            return Response(status_code=200)

        async def wake_up(request: Request) -> Response:
            self.calls.append("wake_up")
            self.sleeping = False
            return Response(status_code=200)

        async def is_sleeping(request: Request) -> Response:
            return JSONResponse({"is_sleeping": self.sleeping})

        async def models(request: Request) -> Response:
            # Like vLLM: the API answers while the engine sleeps.
            return JSONResponse({"object": "list", "data": [{"id": "m"}]})

        return Starlette(
            routes=[
                Route("/sleep", sleep, methods=["POST"]),
                Route("/wake_up", wake_up, methods=["POST"]),
                Route("/is_sleeping", is_sleeping),
                Route("/v1/models", models),
            ]
        )


# --- the relay's task endpoints (chunks, result) ----------------------------------------


@dataclass
class TaskSink:
    """Records chunk batches and results; can answer `cancelled` after some batches."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    cancel_after: int | None = None
    cancel_with_409: bool = False
    # Refuse (413) chunk batches, or results whose body is larger than this many bytes.
    refuse_chunks: bool = False
    max_result_bytes: int | None = None

    def app(self) -> Starlette:
        async def chunks(request: Request) -> Response:
            batch = await request.json()
            self.batches.append(batch)
            if self.refuse_chunks:
                return _too_large()
            if self.cancel_after is not None and len(self.batches) > self.cancel_after:
                if self.cancel_with_409:
                    return JSONResponse(
                        {
                            "error": {
                                "message": "the client went away",
                                "type": "invalid_request_error",
                                "code": "task_cancelled",
                            }
                        },
                        409,
                    )
                return JSONResponse({"seq": batch["seq"], "cancelled": True})
            return JSONResponse({"seq": batch["seq"]})

        async def result(request: Request) -> Response:
            raw = await request.body()
            self.results.append(json.loads(raw))
            if self.max_result_bytes is not None and len(raw) > self.max_result_bytes:
                return _too_large()
            return JSONResponse(
                {
                    "id": request.path_params["task_id"],
                    "kind": "infer",
                    "llm": "x",
                    "state": "completed",
                    "createdAt": "now",
                }
            )

        base = "/api/v1/llms/_provider-task/{task_id}"
        return Starlette(
            routes=[
                Route(f"{base}/chunks", chunks, methods=["POST"]),
                Route(f"{base}/result", result, methods=["POST"]),
            ]
        )

    def text(self) -> str:
        return "".join(
            (choice.get("delta") or {}).get("content") or ""
            for batch in self.batches
            for chunk in batch["chunks"]
            for choice in chunk.get("choices", [])
        )


def _too_large() -> Response:
    error = {
        "message": "a result may be at most 100 bytes",
        "type": "invalid_request_error",
        "code": "payload_too_large",
    }
    return JSONResponse({"error": error}, 413)
