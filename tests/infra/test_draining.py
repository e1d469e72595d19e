"""Draining: the requests waiting when a long-lived relay stops are answered at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from natrelay_infra.draining import Draining
from tests.support.net import serve


async def _wait(request: Request) -> Response:
    await asyncio.sleep(60)
    return JSONResponse({"tasks": []})


async def _stream(request: Request) -> Response:
    async def events() -> Any:
        yield 'data: {"n": 1}\n\n'
        await asyncio.sleep(60)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def _quick(request: Request) -> Response:
    return JSONResponse({"ok": True})


def test_drain_answers_waiting_requests_at_once() -> None:
    app = Draining(
        Starlette(
            routes=[Route("/wait", _wait), Route("/stream", _stream), Route("/quick", _quick)]
        )
    )
    seen: dict[str, Any] = {}

    def wait() -> None:
        seen["wait"] = httpx.get(f"{url}/wait", timeout=30)

    def stream() -> None:
        with httpx.stream("GET", f"{url}/stream", timeout=30) as response:
            seen["stream"] = [line for line in response.iter_lines() if line]

    with serve(app) as url:
        assert httpx.get(f"{url}/quick").json() == {"ok": True}
        threads = [threading.Thread(target=wait), threading.Thread(target=stream)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        drained_at = time.monotonic()
        app.drain()
        for thread in threads:
            thread.join(10)
        assert time.monotonic() - drained_at < 2
        late = httpx.get(f"{url}/quick")
    waited = seen["wait"]
    assert waited.status_code == 503 and waited.headers["retry-after"] == "5"
    assert waited.json()["error"]["message"] == "the relay is shutting down; try again shortly"
    first, error = seen["stream"]
    assert first == 'data: {"n": 1}'
    assert json.loads(error.removeprefix("data: "))["error"]["type"] == "service_unavailable"
    # Whatever arrives after the drain is answered the same way.
    assert late.status_code == 503
