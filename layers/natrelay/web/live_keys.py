"""An answer that streams for a long time ends soon after its key stops working.

The key was checked when the request came in; a stream may run for minutes after. While
it runs, its key is checked again every CHECK_SECONDS (from the key cache: a DynamoDB
read once per NATRELAY_KEY_CACHE_SECONDS per process), so a revoked or expired key's
streams end within the revocation window, with an error event. Ending the stream ends
the work behind it (its task is cancelled, its upstream call closed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio

from natrelay.errors import AuthError
from natrelay.service import Principal, Relay
from natrelay.web.ticking import Tick, ticking

CHECK_SECONDS = 2.0


async def while_key_lives(
    relay: Relay,
    principal: Principal,
    frames: AsyncIterator[str],
    error_frame: Callable[[AuthError], str],
) -> AsyncIterator[str]:
    """`frames` as they come, until they end or the caller's key stops working (then
    `error_frame` of why, and the frames are closed)."""
    next_check = relay.clock() + CHECK_SECONDS
    items = ticking(frames, CHECK_SECONDS)
    try:
        async for frame in items:
            if relay.clock() >= next_check:
                next_check = relay.clock() + CHECK_SECONDS
                try:
                    await relay.access.check_live(principal)
                except AuthError as exc:
                    yield error_frame(exc)
                    return
            if not isinstance(frame, Tick):
                yield frame
    finally:
        with anyio.CancelScope(shield=True):
            await items.aclose()  # closes the frames too
