"""An ASGI wrapper that ends the requests still waiting when a long-lived relay stops.

Long-polls wait up to 25 s and clients wait for answers: on shutdown uvicorn waits its
grace for them, then cancels them, which logs a traceback per request and answers 500.
`Draining.drain()` instead answers every waiting request at once — 503 with
`Retry-After` if nothing was sent yet (a publisher retries that quietly), an SSE error
event if a stream had begun — so the server stops in an instant and cleanly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from natrelay.wire import ErrorCode, ErrorType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_SECONDS = 5
ERROR = {
    "message": "the relay is shutting down; try again shortly",
    "type": ErrorType.SERVICE_UNAVAILABLE.value,
    "code": ErrorCode.HTTP_ERROR.value,
    "param": None,
}


class Draining:
    """Wraps an ASGI app; `drain()` (from any thread) ends the HTTP requests in flight."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained = asyncio.Event()

    def drain(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drained.set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._loop = asyncio.get_running_loop()
        if self._drained.is_set():
            await _unavailable(send)
            return
        started: list[Message] = []

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            await send(message)

        inner = asyncio.ensure_future(self.app(scope, receive, tracked))
        drained = asyncio.ensure_future(self._drained.wait())
        try:
            await asyncio.wait({inner, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
        if inner.done():
            inner.result()
            return
        inner.cancel()
        await asyncio.gather(inner, return_exceptions=True)
        if not started:
            await _unavailable(send)
        elif _is_event_stream(started[0]):
            event = f"data: {json.dumps({'error': ERROR})}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _is_event_stream(start: Message) -> bool:
    headers = dict(start.get("headers") or [])
    return bytes(headers.get(b"content-type", b"")).startswith(b"text/event-stream")


async def _unavailable(send: Send) -> None:
    body = json.dumps({"error": ERROR}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
