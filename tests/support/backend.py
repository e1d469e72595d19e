"""The fake OpenAI-compatible backend of the tests and the benchmark.

In a test: `with serve(backend.app()) as url` (the base URL without /v1). As a process,
for the benchmark: `python -m tests.support.backend [--echo] [--asleep] [--stream-tokens N]
[--token-interval-ms MS] [--wake-delay S]` prints its base URL once it listens, then
serves until SIGTERM.

* `GET /v1/models` lists `models`.
* `POST /v1/completions`, `/v1/embeddings`, `/v1/responses`, `/v1/messages`: see
  tests/support/api_backend.py (those in `missing` answer 404; `raw` keeps their bytes).
* `POST /v1/chat/completions` answers `reply`, or the words `t0 t1 …` when `tokens` is
  set. Streamed (SSE, after a comment line), one word a chunk, `interval` s apart (the
  first at once), then the usage if `stream_options.include_usage` asks for it.
  Non-streamed answers come at once: with the last user message instead when `echo`,
  reversed when that message starts with `ECHO:`; `stream_echo` streams that too.
* Backend models that misbehave: `fail-400` (an OpenAI error), `fail-500` (plain text),
  `bad-json` (200, not JSON), `break` (the stream ends with an error event), `truncate`
  (the stream stops after its pieces: no finish_reason, no `[DONE]`), `quote` (an error
  that quotes the request's `user` and the API key it was sent: a 400, or streamed, an
  error event after the pieces), `garbage` (a stream
  event that is not JSON after the first piece), `hang` (never answers; streamed: the
  first piece, then nothing), `delay` (a non-streamed answer after 0.4 s; `max_active` is
  the most answered at once); `latency` delays every non-streamed answer.
* `hold(passing=k)` makes chat answers after the next k wait once they have their
  request (a non-streamed one before its answer, a streamed one after `hold_after`
  pieces) until `release()`; `holding(n)` waits until n of them wait there: a test sees
  the relay's state while the backend works, without guessing how long that takes.
* With `api_key`, a chat request without `Authorization: Bearer <api_key>` is 401.
* While `asleep`, both answer 503. `POST /_fake/wake` wakes it `wake_delay` s later and
  answers only then (a synchronous wake recipe); `POST /_fake/sleep`; `GET /_fake/state`
  (`upAt`: the wall-clock time it came up).

It records the requests (and their `traceparent` headers), when it produced each streamed
token, and whether a client hung up mid-stream (`aborted`) or a stream ran to its end
(`finished`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.api_backend import ApiRoutes
from tests.support.net import listen

REPLY = "Hello there,  world!\nBye."


def words(text: str) -> list[str]:
    """`text` in pieces that join back to it: each word after the first keeps its space."""
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


@dataclass
class FakeBackend:
    reply: str = REPLY
    tokens: int | None = None
    interval: float = 0.0
    echo: bool = False
    # Streams echo too: the last user message, word by word.
    stream_echo: bool = False
    prompt_tokens: int = 7
    models: tuple[str, ...] = ("m1", "m2")
    asleep: bool = False
    wake_delay: float = 0.5
    # Every non-streamed answer takes this long (model `delay`: 0.4 s at least).
    latency: float = 0.0
    # The API key it wants (`Authorization: Bearer …`; None: any or none).
    api_key: str | None = None
    # What it saw and did.
    requests: list[dict[str, Any]] = field(default_factory=list)
    # The `traceparent` header of each chat request (None: it had none).
    traceparents: list[str | None] = field(default_factory=list)
    produced_at: list[float] = field(default_factory=list)
    aborted: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    active: int = 0
    max_active: int = 0
    up_at: float | None = None
    # Endpoints beyond chat it answers 404, as a server that lacks them does.
    missing: frozenset[str] = frozenset()
    # The bytes of each request to an endpoint beyond chat, as (endpoint, body).
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    # Streamed answers held by `hold()` wait after this many pieces.
    hold_after: int = 0
    _waking: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _held: int = field(default=0, init=False, repr=False)
    _passing: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._released.set()
        if not self.asleep:
            self.up_at = time.time()

    def hold(self, passing: int = 0) -> None:
        """Hold the chat answers after the next `passing`, until `release()`."""
        self._held, self._passing = 0, passing
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def holding(self, n: int = 1, timeout: float = 30.0) -> None:
        """Wait until `n` answers are held; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self._held < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._held} of {n} answers held after {timeout:g} s")
            time.sleep(0.01)

    async def _wait_release(self) -> None:
        if self._released.is_set():
            return
        if self._passing > 0:
            self._passing -= 1
            return
        self._held += 1
        while not self._released.is_set():
            await asyncio.sleep(0.01)

    def pieces(self) -> list[str]:
        """The answer, as streamed: one piece a chunk."""
        if self.tokens is not None:
            return [f"t{i} " for i in range(self.tokens)]
        return words(self.reply)

    def text(self) -> str:
        return "".join(self.pieces())

    def usage(self) -> dict[str, int]:
        completion = len(self.pieces())
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def app(self) -> Starlette:
        api = ApiRoutes(self)
        return Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                *(
                    Route(f"/v1/{endpoint}", api.handler(endpoint), methods=["POST"])
                    for endpoint in ("completions", "embeddings", "responses", "messages")
                ),
                Route("/_fake/wake", self._wake, methods=["POST"]),
                Route("/_fake/sleep", self._sleep, methods=["POST"]),
                Route("/_fake/state", self._state),
            ]
        )

    async def _models(self, request: Request) -> Response:
        if self.asleep:
            return JSONResponse({"error": {"message": "asleep"}}, 503)
        data = [{"id": model, "object": "model"} for model in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> Response:
        if self.asleep:
            return JSONResponse({"error": {"message": "asleep", "code": 503}}, 503)
        given = request.headers.get("authorization", "")
        if self.api_key is not None and given != f"Bearer {self.api_key}":
            # as a hosted provider does: it quotes the key it was given
            error = {"message": f"Incorrect API key provided: {given[7:]}", "code": "bad_key"}
            return JSONResponse({"error": error}, 401)
        body = await request.json()
        self.requests.append(body)
        self.traceparents.append(request.headers.get("traceparent"))
        model = body.get("model")
        if model == "fail-400":
            error = {"message": "this model does not exist", "type": "invalid"}
            return JSONResponse({"error": error}, 400)
        if model == "fail-500":
            return PlainTextResponse("the GPU caught fire", 500)
        if model == "quote" and not body.get("stream"):
            # as some providers do: the error quotes what it was sent, the key included
            error = {"message": f"user {body.get('user')} may not use the key {given[7:]}"}
            return JSONResponse({"error": error}, 400)
        if model == "bad-json":
            return PlainTextResponse("this is not JSON", 200)
        if body.get("stream"):
            return StreamingResponse(self._sse(body, given[7:]), media_type="text/event-stream")
        if model == "hang":
            while not await request.is_disconnected():  # until the client gives up
                await asyncio.sleep(0.05)
            return Response(status_code=499)
        await self._wait_release()
        wait = max(self.latency, 0.4 if model == "delay" else 0.0)
        if wait:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            await asyncio.sleep(wait)
            self.active -= 1
        message = {"role": "assistant", "content": self._answer(body)}
        return JSONResponse(
            {
                **_head(body, "chat.completion"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": self.usage(),
            }
        )

    def _answer(self, body: dict[str, Any]) -> str:
        prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
        if prompt.startswith("ECHO:"):
            return prompt[::-1]
        return prompt if self.echo else self.text()

    async def _sse(self, body: dict[str, Any], key: str = "") -> AsyncIterator[str]:
        head = _head(body, "chat.completion.chunk")
        try:
            yield ": a comment line the parser must skip\n\n"
            model = body.get("model")
            pieces = words(self._answer(body)) if self.stream_echo else self.pieces()
            for i, piece in enumerate(pieces):
                if i == self.hold_after:
                    await self._wait_release()
                if i:
                    await asyncio.sleep(self.interval)
                self.produced_at.append(time.monotonic())
                delta = {"content": piece}
                chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                if model == "hang":
                    await asyncio.Event().wait()
                if model == "garbage":
                    yield "data: {this is not JSON\n\n"
            if model == "break":
                yield 'data: {"error": {"message": "out of memory", "code": 500}}\n\n'
                return
            if model == "quote":
                error = {"message": f"user {body.get('user')} may not use the key {key}"}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            if model == "truncate":
                return
            stop = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(stop)}\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': self.usage()})}\n\n"
            yield "data: [DONE]\n\n"
            self.finished.set()
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.set()
            raise

    async def _wake(self, request: Request) -> Response:
        if self.asleep:
            if self._waking is None:
                self._waking = asyncio.create_task(self._wake_up())
            await asyncio.shield(self._waking)
        return JSONResponse({"awake": True, "upAt": self.up_at})

    async def _wake_up(self) -> None:
        await asyncio.sleep(self.wake_delay)
        self.asleep, self.up_at, self._waking = False, time.time(), None

    async def _sleep(self, request: Request) -> Response:
        self.asleep, self.up_at = True, None
        return JSONResponse({"awake": False})

    async def _state(self, request: Request) -> Response:
        state = {"awake": not self.asleep, "upAt": self.up_at, "completions": len(self.requests)}
        return JSONResponse(state)


def _head(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": kind, "created": 1, "model": body.get("model")}


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake OpenAI-compatible backend")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--echo", action="store_true", help="answer with the last message")
    parser.add_argument("--asleep", action="store_true")
    parser.add_argument("--stream-tokens", type=int, default=20)
    parser.add_argument("--token-interval-ms", type=float, default=20.0)
    parser.add_argument("--wake-delay", type=float, default=0.5)
    args = parser.parse_args()
    backend = FakeBackend(
        tokens=args.stream_tokens,
        interval=args.token_interval_ms / 1000,
        echo=args.echo,
        asleep=args.asleep,
        wake_delay=args.wake_delay,
    )
    sock = listen(args.port)
    config = uvicorn.Config(
        backend.app(), log_level="warning", lifespan="off", access_log=False, backlog=2048
    )
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
