"""The trace context of the task a publisher runs (natrelay.wire.trace): each task runs
in its own span under the relay's (the polled task's `traceparent`), which its log lines
carry and which goes, as the parent, to the backend and back to the relay with every
request made for the task."""

from __future__ import annotations

import httpx

from natrelay.wire import trace


async def carry(request: httpx.Request) -> None:
    """An httpx request hook: send the running task's traceparent, if there is one."""
    traceparent = trace.current.get()
    if traceparent is not None and trace.HEADER not in request.headers:
        request.headers[trace.HEADER] = traceparent


HOOKS = {"request": [carry]}
