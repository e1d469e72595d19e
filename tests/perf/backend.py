"""A fake OpenAI-compatible backend for the benchmark, run as its own process.

`python -m tests.perf.backend [--asleep] [--stream-tokens N] [--token-interval-ms MS]`
prints its base URL (without /v1) once it listens, then serves until SIGTERM:

* `POST /v1/chat/completions` answers at once with the last user message echoed;
  with `stream: true`, N chunks `--token-interval-ms` apart (the first at once).
* `GET /v1/models` lists one model; 503 while asleep (the publisher's availability check).
* `POST /_bench/wake` wakes a sleeping backend after `--wake-delay` seconds and answers
  only then (a synchronous wake recipe), `POST /_bench/sleep`, `GET /_bench/state`
  (`upAt` is the wall-clock time it came up: the wake benchmark's "backend up").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "bench-model"


class Backend:
    def __init__(self, *, asleep: bool, tokens: int, interval: float, wake_delay: float) -> None:
        self.awake = not asleep
        self.up_at: float | None = None if asleep else time.time()
        self.tokens = tokens
        self.interval = interval
        self.wake_delay = wake_delay
        self.completions = 0
        self._waking: asyncio.Task[None] | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/_bench/wake", self.wake, methods=["POST"]),
                Route("/_bench/sleep", self.sleep, methods=["POST"]),
                Route("/_bench/state", self.state),
            ]
        )

    async def models(self, request: Request) -> Response:
        if not self.awake:
            return JSONResponse({"error": {"message": "asleep"}}, 503)
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        if not self.awake:
            return JSONResponse({"error": {"message": "asleep", "code": 503}}, 503)
        body = await request.json()
        self.completions += 1
        text = str(body["messages"][-1].get("content", ""))
        if body.get("stream"):
            return StreamingResponse(self._sse(body), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model", MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16},
            }
        )

    async def _sse(self, body: dict[str, Any]) -> AsyncIterator[str]:
        head = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body.get("model", MODEL),
        }
        for i in range(self.tokens):
            if i:
                await asyncio.sleep(self.interval)
            delta = {"content": f"t{i} "}
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        stop = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(stop)}\n\n"
        yield "data: [DONE]\n\n"

    async def wake(self, request: Request) -> Response:
        if not self.awake:
            if self._waking is None:
                self._waking = asyncio.create_task(self._wake())
            await asyncio.shield(self._waking)
        return JSONResponse({"awake": True, "upAt": self.up_at})

    async def _wake(self) -> None:
        await asyncio.sleep(self.wake_delay)
        self.awake = True
        self.up_at = time.time()
        self._waking = None

    async def sleep(self, request: Request) -> Response:
        self.awake = False
        self.up_at = None
        return JSONResponse({"awake": False})

    async def state(self, request: Request) -> Response:
        return JSONResponse(
            {"awake": self.awake, "upAt": self.up_at, "completions": self.completions}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible backend")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--asleep", action="store_true")
    parser.add_argument("--stream-tokens", type=int, default=20)
    parser.add_argument("--token-interval-ms", type=float, default=20.0)
    parser.add_argument("--wake-delay", type=float, default=0.5)
    args = parser.parse_args()
    backend = Backend(
        asleep=args.asleep,
        tokens=args.stream_tokens,
        interval=args.token_interval_ms / 1000,
        wake_delay=args.wake_delay,
    )
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose `proto` says
    # TCP, and socket.socket() says 0 — its keep-alive answers would wait ~40 ms for the
    # client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        backend.app(), log_level="warning", lifespan="off", access_log=False, backlog=2048
    )
    server = uvicorn.Server(config)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
