"""The items of an async iterator, with a tick whenever `every` seconds pass without one:
what a stream needs to act while its source is quiet (a keep-alive, a key check)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import anyio

T = TypeVar("T")


class Tick:
    """`every` seconds passed without an item."""


TICK = Tick()


class _End:
    """The end of the source."""


_END = _End()


async def ticking(
    source: AsyncIterator[T], every: float, pending: asyncio.Future[T | _End] | None = None
) -> AsyncGenerator[T | Tick, None]:
    """`source`'s items, and TICK whenever `every` seconds pass without one (`pending`:
    the next item, already asked for). Closing this closes `source`."""
    pending = pending or asyncio.ensure_future(anext(source, _END))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield TICK
                continue
            item = pending.result()
            if isinstance(item, _End):
                return
            yield item
            pending = asyncio.ensure_future(anext(source, _END))
    finally:
        pending.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(pending, return_exceptions=True)
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()


def next_item(source: AsyncIterator[T]) -> asyncio.Future[T | _End]:
    """The next item of `source`, asked for now (for `ticking`'s `pending`)."""
    return asyncio.ensure_future(anext(source, _END))
