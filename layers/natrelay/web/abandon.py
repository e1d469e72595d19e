"""A synchronous client that stops waiting for its answer — it hung up, or its wait ran
out — without asking for a task it can come back to (`Prefer: respond-async`, or an
`Idempotency-Key`, whose retry finds the task): nobody will read that answer, so its
task is cancelled, the publisher aborts the backend request, and the slot is free for
the next caller (service.abandoned says so in the publisher's next heartbeat or poll).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

from natrelay.errors import TaskTimeoutError
from natrelay.service import Relay
from natrelay.store import TaskRecord

# Resolves when the client has gone away (never, where nobody can tell: Lambda).
Gone = Callable[[], Awaitable[None]]


def client_gone(request: Request) -> Gone:
    """Waits for the client to hang up (call it once its body has been read)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


async def wait_or_abandon(
    relay: Relay,
    task: TaskRecord,
    budget: float,
    *,
    fresh: bool,
    keep: bool,
    gone: Gone | None,
) -> TaskRecord:
    """Wait for the task to finish, as `relay.waiting.wait` does. A client that hangs up
    first gets ClientDisconnect; one whose budget runs out TaskTimeoutError. Unless
    `keep`, either cancels the task."""
    waiting = asyncio.ensure_future(relay.waiting.wait(task.id, budget, fresh=fresh))
    watching = asyncio.ensure_future(gone()) if gone is not None else None
    futures: set[asyncio.Future[Any]] = {waiting}
    if watching is not None:
        futures.add(watching)
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        if not keep:
            await _cancel(relay, task.id, "the client went away")
        raise ClientDisconnect()
    except TaskTimeoutError as exc:
        if keep:
            raise
        await _cancel(relay, task.id, f"no answer within {budget:g} s")
        raise TaskTimeoutError(_gave_up(relay, budget), task_id=exc.task_id) from None
    except asyncio.CancelledError:  # the relay is stopping: nobody will read it either
        if not keep:
            await _cancel(relay, task.id, "the relay stopped")
        raise
    finally:
        for future in (waiting, watching):
            if future is not None and not future.done():
                future.cancel()


async def _cancel(relay: Relay, task_id: str, why: str) -> None:
    with anyio.CancelScope(shield=True):
        await relay.endings.cancel(task_id, why)


def _gave_up(relay: Relay, budget: float) -> str:
    """Why there is no answer, and what waits longer."""
    s = relay.settings
    message = f"no answer within {budget:g} s; the request was cancelled."
    if s.long_request_url:
        url = s.long_request_url.rstrip("/")
        return (
            f"{message} This URL answers within {budget:g} s (API Gateway cuts requests at "
            f'30 s): stream ("stream": true) or call {url}, which waits up to '
            f"{s.long_request_timeout_seconds:g} s, or queue it (POST "
            "/api/v1/llms/{model}/infer with Prefer: respond-async) and fetch the answer later"
        )
    return (
        f'{message} Stream it ("stream": true), which may take up to '
        f"{s.stream_timeout_seconds:g} s, or queue it (POST /api/v1/llms/{{model}}/infer with "
        "Prefer: respond-async) and fetch the answer later; the relay's operator sets this "
        "limit (NATRELAY_REQUEST_TIMEOUT_SECONDS)"
    )
