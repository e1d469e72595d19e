"""A backend with one slot, as llama.cpp's server (and llama-cpp-python's) behave: while
it generates it answers nothing else — its model list waits too. Each generation runs
until the test releases it, or until its caller hangs up (then `aborted` is set)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LIMIT_SECONDS = 120.0


def solo(url: str, **extra: Any) -> dict[str, Any]:
    """The provider config of the publisher in front of it: `solo`, one request at once."""
    return {
        "name": "solo",
        "type": "openai",
        "model": "m",
        "baseUrl": f"{url}/v1",
        "maxConcurrency": 1,
        **extra,
    }


class OneSlot:
    def __init__(self) -> None:
        self.generating = threading.Event()
        self.release = threading.Event()
        self.aborted = threading.Event()
        self.calls = 0
        self.answered = 0
        # model lists asked for while it generated (each waited for the release)
        self.listed_while_busy = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _until_released(self, request: Request | None = None) -> bool:
        """Wait for the release; False if the caller hung up first."""
        deadline = time.monotonic() + LIMIT_SECONDS
        while not self.release.is_set() and time.monotonic() < deadline:
            if request is not None and await request.is_disconnected():
                return False
            await asyncio.sleep(0.02)
        return True

    async def _models(self, request: Request) -> Response:
        if self.generating.is_set() and not self.release.is_set():
            self.listed_while_busy += 1
            await self._until_released()  # one slot: it is busy
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.calls += 1
        self.generating.set()
        if not await self._until_released(request):
            self.aborted.set()
            return Response(status_code=499)
        self.answered += 1
        message = {"role": "assistant", "content": body["messages"][-1]["content"]}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [choice],
            }
        )
