"""End to end: a synchronous client that gives up frees the single-slot backend — the
relay cancels its task, the real publisher hears of it in its next heartbeat and aborts
the backend request — so the next caller is served instead of queuing behind it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.net import serve
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "hello"}]


class FirstHangs:
    """An OpenAI-compatible backend whose first chat request never ends by itself: it
    waits until its caller hangs up (as a long generation would run on). Later ones
    answer at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.aborted = threading.Event()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        self.calls += 1
        if self.calls == 1:
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)
            self.aborted.set()
            return Response(status_code=499)
        message = {"role": "assistant", "content": "second"}
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


def test_a_client_that_gives_up_frees_the_backend_for_the_next(
    stack: Stack, tmp_path: Path
) -> None:
    backend = FirstHangs()
    with serve(backend.app()) as url:
        provider = {
            "name": "solo",
            "type": "openai",
            "model": "m",
            "baseUrl": f"{url}/v1",
            "maxConcurrency": 1,
        }
        publisher = start_publisher(publisher_config(stack, tmp_path, [provider]), tmp_path)
        try:
            wait_rows(stack, {"solo": "active"})
            headers = {"Authorization": f"Bearer {stack.client_token}"}
            body = {"model": "solo", "messages": HELLO}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{stack.url}/v1/chat/completions",
                    headers=headers,
                    json=body,
                    timeout=httpx.Timeout(30, read=2.0),
                )
            assert backend.aborted.wait(30), publisher.log()
            publisher.wait_log("its client went away; backend request aborted")
            second = httpx.post(
                f"{stack.url}/v1/chat/completions", headers=headers, json=body, timeout=60
            )
            assert second.status_code == 200, second.text
            assert second.json()["choices"][0]["message"]["content"] == "second"
            assert backend.calls == 2
        finally:
            publisher.stop()
