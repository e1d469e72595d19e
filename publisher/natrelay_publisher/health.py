"""Is a backend up, when nothing else says so?

An idle backend is asked (its model list, or its wake recipe's readiness check). A busy
one is not: some servers — llama.cpp's, llama-cpp-python's — answer nothing else while
they generate, and a long answer is the box at its busiest, not down. While a request
runs on the backend, that request is the check: it has its own silence limit
(`timeoutSeconds`), and fails past it; then the backend is idle and asked again. A request
that comes while a check is on its way waits for its answer (milliseconds, when idle):
llama-cpp-python's server cuts a stream short for a check that arrives after it began.
Providers that publish models of the same server (its base URL) share what is running on
it and what is asked of it (`BackendLoad`): one llama-cpp-python server serving two names
is busy for both while either generates.

The check waits `healthTimeoutSeconds` (5 s), or longer when the backend has lately been
slow to answer it (a few times its slowest recent answer), never longer than half a
heartbeat: a check must not hold the heartbeat back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

# A slow answer lets the next checks wait this many times as long...
SLOW_FACTOR = 3.0
# ... judged by the last few answers.
REMEMBERED = 5


def _unset() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class BackendLoad:
    """One backend server: the requests of ours running on it, and the checks on their
    way to it (`unasked` is set while there are none)."""

    running: int = 0
    asking: int = 0
    unasked: asyncio.Event = field(default_factory=_unset)

    @contextlib.contextmanager
    def asked(self) -> Iterator[None]:
        self.asking += 1
        self.unasked.clear()
        try:
            yield
        finally:
            self.asking -= 1
            if not self.asking:
                self.unasked.set()


class Health:
    def __init__(
        self,
        timeout: float,
        ceiling: float,
        clock: Callable[[], float] = time.monotonic,
        load: BackendLoad | None = None,
    ) -> None:
        self.base = timeout
        self.ceiling = max(timeout, ceiling)
        self.clock = clock
        self.load = load or BackendLoad()
        # Why the last check failed, if it did.
        self.problem: str | None = None
        self._recent: deque[float] = deque(maxlen=REMEMBERED)

    @property
    def busy(self) -> bool:
        return self.load.running > 0

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Count a request on the backend for as long as it runs; it starts once the
        checks on their way have their answers (no new check starts meanwhile)."""
        self.load.running += 1
        try:
            await self.load.unasked.wait()
            yield
        finally:
            self.load.running -= 1

    @property
    def timeout(self) -> float:
        """How long the next check may take: more when the backend was slow lately."""
        slowest = max(self._recent, default=0.0)
        return min(self.ceiling, max(self.base, SLOW_FACTOR * slowest))

    async def check(self, probe: Callable[[], Awaitable[bool]]) -> bool | None:
        """Ask the backend (`probe`) within the timeout; a probe that raises says it is
        down (a plugin's bug must not stop the publisher). None: no verdict (it is busy,
        or became busy while asked: its requests judge it)."""
        if self.busy:
            return None
        started, timeout = self.clock(), self.timeout
        self.problem = None
        try:
            with self.load.asked():
                async with asyncio.timeout(timeout):
                    up = await probe()
        except TimeoutError:
            self.problem = f"no answer within {timeout:g} s (healthTimeoutSeconds)"
            up = False
        except Exception as exc:  # a plugin's check that raises says "not available"
            self.problem = f"its availability check raised {type(exc).__name__}: {exc}"
            up = False
        if self.busy:
            return None
        if up:
            self._recent.append(self.clock() - started)
        return up
