"""Capacity-aware dispatch: each member's measured time per task, and how much a member
slower than its pool's fastest holds back.

The relay measures every task it hands out, from its claim to its result (an EWMA per
member and pool, in this process). A member more than SLOWER times slower than the
fastest member measured lately leaves new work to the faster ones: the fast path does
not hand it a request while a faster member serves the pool, and its polls take a
queued task only once that task has waited as long as the member's handicap (what it
takes more than the fastest). So a slow box still helps when work piles up, and a
request never waits longer for a fast box than the slow one would have taken more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Weight of the latest measure in the average.
ALPHA = 0.3
# A member this many times slower than its pool's fastest holds back.
SLOWER = 1.5
# Measures older than this do not count (a member that left, or stopped serving).
FRESH_SECONDS = 300.0
# (pool, member) pairs remembered at most.
MAX_MEMBERS = 10_000


@dataclass
class Speed:
    """A member's average time per task in a pool, over `tasks` tasks."""

    seconds: float
    tasks: int
    at: float


class Speeds:
    def __init__(self, clock: Callable[[], float], *, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self._speeds: OrderedDict[tuple[str, str], Speed] = OrderedDict()

    def observe(self, llm: str, session_id: str, seconds: float) -> None:
        """A task of the pool ran on the member for `seconds`, claim to result."""
        key, now = (llm, session_id), self.clock()
        seen = self._speeds.pop(key, None)
        if seen is None or now - seen.at > FRESH_SECONDS:
            self._speeds[key] = Speed(seconds, 1, now)
        else:
            average = ALPHA * seconds + (1 - ALPHA) * seen.seconds
            self._speeds[key] = Speed(average, seen.tasks + 1, now)
        while len(self._speeds) > MAX_MEMBERS:
            self._speeds.popitem(last=False)

    def of(self, llm: str, session_id: str) -> Speed | None:
        """The member's measured speed in the pool (None: not measured lately)."""
        speed = self._speeds.get((llm, session_id))
        return speed if speed is not None and self.clock() - speed.at <= FRESH_SECONDS else None

    def handicap(self, llm: str, session_id: str, members: Iterable[str] | None = None) -> float:
        """How much longer a task takes on this member than on the fastest of `members`
        (its pool's live ones; None: those measured lately), if it is more than SLOWER
        times slower; else 0."""
        mine = self.of(llm, session_id)
        if mine is None or not self.enabled:
            return 0.0
        if members is None:
            members = [m for pool, m in self._speeds if pool == llm]
        others = [s.seconds for m in members if m != session_id and (s := self.of(llm, m))]
        best = min(others, default=mine.seconds)
        return mine.seconds - best if mine.seconds > best * SLOWER else 0.0
