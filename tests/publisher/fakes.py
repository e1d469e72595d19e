"""Backends only the publisher tests need: Ollama's native API and vLLM's sleep mode.

The OpenAI-compatible backend is tests/support/backend.py; the wake target is
natrelay_infra.wake_controller; the relay is tests/publisher/fake_relay.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.api_backend import ApiRoutes
from tests.support.backend import FakeBackend

# --- an Ollama backend (native API) ------------------------------------------------------


OLLAMA_VERSION = "0.9.0"


def ollama_app(backend: FakeBackend, models: list[str] | None = None) -> Starlette:
    """The fake backend's answer through Ollama's `/api/chat`; model `missing` is not found,
    model `truncate` streams its pieces but never the `"done": true` line. `/api/embed`
    answers vectors from each text's length. `/api/tags` lists `models` as it is at each
    request (default: llama3:latest and qwen2:7b); `/api/version` says OLLAMA_VERSION."""

    async def tags(request: Request) -> Response:
        listed = ["llama3:latest", "qwen2:7b"] if models is None else list(models)
        return JSONResponse({"models": [{"name": name, "model": name} for name in listed]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def chat(request: Request) -> Response:
        body = await request.json()
        backend.requests.append(body)
        if body["model"] == "missing":
            return JSONResponse({"error": "model 'missing' not found, try pulling it first"}, 404)
        if body.get("stream", True):
            return StreamingResponse(_ndjson(body, backend), media_type="application/x-ndjson")
        return JSONResponse(
            {
                "model": body["model"],
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": backend.text()},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 9,
                "eval_count": 5,
            }
        )

    async def embed(request: Request) -> Response:
        body = await request.json()
        backend.requests.append(body)
        given = body["input"]
        texts = [given] if isinstance(given, str) else given
        dims = int(body.get("dimensions") or 3)
        vectors = [[round(0.25 * (len(t) + i), 2) for i in range(dims)] for t in texts]
        count = 2 * len(texts)
        return JSONResponse(
            {"model": body["model"], "embeddings": vectors, "prompt_eval_count": count}
        )

    # Ollama's OpenAI- and Anthropic-compatible API under /v1 (those in `missing`: 404,
    # as an Ollama too old to have them answers).
    api = ApiRoutes(backend)
    return Starlette(
        routes=[
            Route("/api/tags", tags),
            Route("/api/version", version),
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/embed", embed, methods=["POST"]),
            *(
                Route(f"/v1/{endpoint}", api.handler(endpoint), methods=["POST"])
                for endpoint in ("completions", "responses", "messages")
            ),
        ]
    )


async def _ndjson(body: dict[str, Any], backend: FakeBackend) -> AsyncIterator[str]:
    for piece in backend.pieces():
        line = {
            "model": body["model"],
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        yield json.dumps(line) + "\n"
    if body["model"] == "truncate":
        return
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


# --- a vLLM with sleep mode ----------------------------------------------------------------


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
