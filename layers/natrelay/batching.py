"""Writes gathered and made together, behind the answers (server mode only)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("natrelay.batching")


class Batch(Generic[T]):
    """Entries written together by `write`: `seconds` after the first one came in, or at
    once when `size` are in. A failed write is logged (what it loses is bookkeeping: the
    answers went out before it)."""

    def __init__(
        self,
        what: str,
        seconds: float,
        write: Callable[[list[T]], Awaitable[None]],
        size: int | None = None,
    ) -> None:
        self.what = what
        self.seconds = seconds
        self.size = size
        self._write = write
        self._entries: list[T] = []
        self._timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self._writing: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: T) -> None:
        self._entries.append(entry)
        loop = asyncio.get_running_loop()
        if self.size is not None and len(self._entries) >= self.size:
            self._flush_soon()
        elif self._timer is None or self._timer[0] is not loop:  # (tests run several loops)
            self._timer = (loop, loop.call_later(self.seconds, self._flush_soon))

    def _flush_soon(self) -> None:
        writing = asyncio.ensure_future(self.flush())
        self._writing.add(writing)
        writing.add_done_callback(self._writing.discard)

    async def flush(self) -> None:
        """Write what is gathered now."""
        if self._timer is not None:
            self._timer[1].cancel()
            self._timer = None
        entries, self._entries = self._entries, []
        if entries:
            try:
                await self._write(entries)
            except Exception:
                log.exception("%d %s not written", len(entries), self.what)

    async def drain(self) -> None:
        """Write what is gathered, and wait for the writes under way (shutting down)."""
        await self.flush()
        while self._writing:
            await asyncio.gather(*self._writing)
