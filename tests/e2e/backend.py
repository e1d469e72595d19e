"""A timed OpenAI-compatible backend: streams `tokens` words, one every `interval` seconds.

It records when it produced each token, the requests it got, and whether a client
hung up on it mid-stream, so tests can assert on the relay's timing and cancellation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Timed:
    tokens: int = 40
    interval: float = 0.05
    produced_at: list[float] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    aborted: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def words(self) -> list[str]:
        return [f"t{i} " for i in range(self.tokens)]

    def text(self) -> str:
        return "".join(self.words())

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "timed"}]})

        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if body.get("stream"):
                return StreamingResponse(self._sse(body), media_type="text/event-stream")
            prompt = str(body["messages"][-1].get("content", ""))
            if prompt.startswith("ECHO:"):  # answer with the prompt itself, reversed
                return JSONResponse(
                    {
                        **self._completion(body),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": prompt[::-1]},
                            }
                        ],
                    }
                )
            await asyncio.sleep(self.tokens * self.interval)
            return JSONResponse(self._completion(body))

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-timed",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.text()},
                }
            ],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": self.tokens,
                "total_tokens": 3 + self.tokens,
            },
            "echo": {k: v for k, v in body.items() if k not in ("messages", "model")},
        }

    async def _sse(self, body: dict[str, Any]) -> AsyncIterator[str]:
        head = {
            "id": "chatcmpl-timed",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
        }
        try:
            for word in self.words():
                await asyncio.sleep(self.interval)
                self.produced_at.append(time.monotonic())
                chunk = {
                    **head,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"  # noqa: E501
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": 3,
                    "completion_tokens": self.tokens,
                    "total_tokens": 3 + self.tokens,
                }
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            self.finished.set()
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.set()
            raise
