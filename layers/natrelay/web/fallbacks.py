"""Fallbacks: a row that cannot serve a request hands it to the first of its fallbacks
that can, and the answer says which row served it (`x-natrelay-served-by`).

"Cannot serve": its publishers are offline or all report their backends down
(backend_unavailable), its wake failed, its pool's queue is full,
or (a public row) its upstream cannot be reached or failed with a 5xx. Decided before
the answer starts: a stream that has begun is never switched. Fallbacks are the row's
own list, tried in order, not transitive (a fallback's fallbacks are not tried), each
within the caller's scope like any model. A queued request (`Prefer: respond-async`)
falls back only to published rows: a public row has no task to queue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response

from natrelay.errors import (
    LlmNotFoundError,
    PublisherOfflineError,
    QueueFullError,
    QueueTimeoutError,
    RelayError,
    UpstreamError,
)
from natrelay.observe import bind
from natrelay.service import Principal, Relay
from natrelay.store import LlmRecord
from natrelay.wire import MAX_FALLBACKS, SERVED_BY_HEADER

log = logging.getLogger("natrelay.web")

Serve = Callable[[LlmRecord], Awaitable[Response]]


def cannot_serve(exc: RelayError) -> bool:
    """Whether another row may serve what this one could not (nothing was sent yet)."""
    if isinstance(exc, QueueTimeoutError):
        return False  # it waited its whole budget: a fallback would have none left
    if isinstance(exc, UpstreamError):
        return exc.unavailable
    return isinstance(exc, PublisherOfflineError | QueueFullError)


async def with_fallbacks(
    relay: Relay,
    principal: Principal,
    name: str,
    serve: Serve,
    *,
    queued: bool = False,
    row: LlmRecord | None = None,
) -> Response:
    """`serve(row)` for the named row (`row`: as already read), else for the first
    fallback that can serve (`queued`: only published ones)."""
    row = row or await relay.catalog.get(principal, name)
    try:
        response = await serve(row)
    except RelayError as exc:
        if not row.fallbacks or not cannot_serve(exc):
            raise
        for alt in row.fallbacks[:MAX_FALLBACKS]:
            if alt == name:
                continue
            try:
                fallback = await relay.catalog.get(principal, alt, hint=False)
                if (queued and fallback.public) or fallback.agent is not None:
                    continue  # an agent is no row to fall back on
                response = await serve(fallback)
            except LlmNotFoundError:
                continue  # gone, or outside the caller's scope
            except RelayError as again:
                if cannot_serve(again):
                    continue
                raise
            log.info("%s cannot serve (%s): served by its fallback %s", name, exc.code, alt)
            bind(servedBy=alt)
            await relay.row_stats.fallback_used(name)  # the console's "fallbacks used today"
            response.headers[SERVED_BY_HEADER] = alt
            return response
        raise exc from None
    response.headers[SERVED_BY_HEADER] = name
    return response
