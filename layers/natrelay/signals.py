"""In-process wake-ups for waiting polls and clients: an optimisation, never required.

When the app runs as one long-lived process, the request that writes a task (or a
result) can wake the request waiting for it at once instead of at its next
DynamoDB re-check. With several processes (Lambda), nothing is shared and waiters
fall back to polling DynamoDB, which is complete on its own.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Listener:
    def __init__(self, enabled: bool) -> None:
        self._event = asyncio.Event() if enabled else None
        self._payloads: list[object] = []

    def set(self, payload: object | None) -> None:
        if self._event is not None:
            if payload is not None:
                self._payloads.append(payload)
            self._event.set()

    def take(self) -> list[object]:
        """What the notifiers handed over since the last take (a hint, never the truth)."""
        payloads, self._payloads = self._payloads, []
        return payloads

    async def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout`; True if notified since the last wait (or while waiting)."""
        if self._event is None:
            await asyncio.sleep(timeout)
            return False
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()


class Signals:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    def notify(self, key: str, payload: object | None = None) -> None:
        for listener in self._listeners.get(key, ()):
            listener.set(payload)

    @contextmanager
    def listen(self, key: str) -> Iterator[Listener]:
        """Register before checking DynamoDB, so a notification in between is not lost."""
        listener = Listener(self.enabled)
        if self.enabled:
            self._listeners[key].add(listener)
        try:
            yield listener
        finally:
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[key]


class Pace:
    """How long to wait before re-checking DynamoDB: fast after activity, then backing
    off (x`growth` per quiet check) to `slowest`. A notification resets it."""

    def __init__(self, fastest: float, slowest: float, growth: float = 1.5) -> None:
        self.fastest, self.slowest, self.growth = fastest, slowest, growth
        self.interval = fastest

    def reset(self) -> None:
        self.interval = self.fastest

    async def wait(self, listener: Listener, remaining: float) -> bool:
        """Wait for a notification or the current interval (never past `remaining`)."""
        notified = await listener.wait(max(0.0, min(self.interval, remaining)))
        self.interval = self.fastest if notified else min(self.interval * self.growth, self.slowest)
        return notified
