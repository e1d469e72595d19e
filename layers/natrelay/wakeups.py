"""In-process wake-ups for waiting polls and clients: an optimisation, never required.

In server mode (one long-lived process) the request that writes a task (or a result)
can wake the request waiting for it at once instead of at its next DynamoDB re-check.
In Lambda mode nothing is shared and waiters fall back to re-reading DynamoDB, which is
complete on its own. Waiters listen on topics: a pool's (its polls) and a task's (its
client).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


def pool_topic(llm: str) -> str:
    """The topic of the polls waiting for a pool's tasks."""
    return f"pool:{llm}"


def task_topic(task_id: str) -> str:
    """The topic of a task's waiters (its client)."""
    return f"task:{task_id}"


class Listener:
    """One waiter. Hints handed over are kept until taken, up to `max_hints` and
    `max_bytes` (as the notifiers sized them); past that they are dropped: a waiter that
    does not read (a paused SSE client) must not make the process grow. The wake-up
    itself is never dropped, and a waiter that misses hints re-reads DynamoDB."""

    def __init__(self, enabled: bool, max_hints: int = 64, max_bytes: int = 1 << 20) -> None:
        self._event = asyncio.Event() if enabled else None
        self._payloads: list[object] = []
        self._bytes = 0
        self.max_hints, self.max_bytes = max_hints, max_bytes

    def set(self, payload: object | None, size: int = 0) -> None:
        if self._event is None:
            return
        if (
            payload is not None
            and len(self._payloads) < self.max_hints
            and self._bytes + size <= self.max_bytes
        ):
            self._payloads.append(payload)
            self._bytes += size
        self._event.set()

    @property
    def held(self) -> int:
        return len(self._payloads)

    def take(self) -> list[object]:
        """What the notifiers handed over since the last take (a hint, never the truth)."""
        payloads, self._payloads, self._bytes = self._payloads, [], 0
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


class Wakeups:
    """The waiters of this process by topic; `enabled` False (Lambda mode): none wait."""

    def __init__(self, enabled: bool = True, max_hints: int = 64, max_bytes: int = 1 << 20) -> None:
        self.enabled = enabled
        self.max_hints, self.max_bytes = max_hints, max_bytes
        # Waiters by key, oldest first (a dict used as an ordered set).
        self._listeners: defaultdict[str, dict[Listener, None]] = defaultdict(dict)
        # How many notifications each key someone asked `seq` of has had.
        self._seq: dict[str, int] = {}

    def seq(self, key: str) -> int:
        """A number that changes whenever `key` is notified (from the first call on)."""
        return self._seq.setdefault(key, 0)

    def notify(self, key: str, payload: object | None = None, size: int = 0) -> None:
        """Wake the waiters of `key`, handing each `payload` (of `size` bytes) as a hint."""
        if key in self._seq:
            self._seq[key] += 1
        for listener in self._listeners.get(key, ()):
            listener.set(payload, size)

    def notify_one(self, key: str, payload: object | None = None) -> None:
        """Wake one waiter of `key`, the one that has waited longest (a pool's polls take
        turns: one claim attempt instead of every idle member racing for the task)."""
        if key in self._seq:
            self._seq[key] += 1
        listeners = self._listeners.get(key)
        if listeners:
            first = next(iter(listeners))
            first.set(payload)
            # to the back of the line: dicts keep insertion order
            listeners.pop(first)
            listeners[first] = None

    def held(self) -> int:
        """How many hints this process holds for waiters that have not taken them."""
        return sum(listener.held for group in self._listeners.values() for listener in group)

    @contextmanager
    def listen(self, *keys: str) -> Iterator[Listener]:
        """Register before checking DynamoDB, so a notification in between is not lost.
        One listener may wait on several keys (a poll on each pool it serves)."""
        listener = Listener(self.enabled, self.max_hints, self.max_bytes)
        if self.enabled:
            for key in keys:
                self._listeners[key][listener] = None
        try:
            yield listener
        finally:
            for key in keys:
                listeners = self._listeners.get(key)
                if listeners is not None:
                    listeners.pop(listener, None)
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
