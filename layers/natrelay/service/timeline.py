"""Where a request spent its time, from its task's own timestamps.

    received ─relay─ queued ─wake─ woke ─queue─ asked ─dispatch─ dispatched ─backend─ done
                                                                      └ first token

* relay: the relay's own work before the task was queued (its key, limits, row, write);
* wake: waiting for a sleeping backend to wake (only when the request started a wake or
  joined one);
* queue: no member was asking for work (every member busy, or between its polls, or a
  doorbell ring on its way to it);
* dispatch: from a member's poll (or claim) asking, to the task being handed to it;
* backend: the publisher and its backend, from the hand-over to the answer's end (its
  first token splits it for streams).

The legs add up to `done - received`: the client's time, less the way back to it.
"""

from __future__ import annotations

from dataclasses import dataclass

LEGS = ("relay", "wake", "queue", "dispatch", "backend")


@dataclass(frozen=True)
class Marks:
    """The moments of one request (epoch seconds; None: it has not got there, or it did
    not happen: no wake)."""

    received: float
    queued: float
    woke: float | None = None
    asked: float | None = None
    dispatched: float | None = None
    first_token: float | None = None
    done: float | None = None

    def legs(self) -> dict[str, float]:
        """Each leg in ms, as far as the request got (a leg not reached is left out)."""
        out = {"relay": max(0.0, self.queued - self.received)}
        end = self.dispatched if self.dispatched is not None else self.done
        ready = self.queued
        if self.woke is not None:
            ready = max(self.queued, min(self.woke, end if end is not None else self.woke))
            out["wake"] = ready - self.queued
        if end is None:
            return {k: v * 1000 for k, v in out.items()}
        asked = min(max(self.asked if self.asked is not None else ready, ready), end)
        out["queue"] = max(0.0, asked - ready)
        out["dispatch"] = max(0.0, end - asked)
        if self.dispatched is not None and self.done is not None:
            out["backend"] = max(0.0, self.done - self.dispatched)
        return {k: v * 1000 for k, v in out.items()}

    @property
    def whole_ms(self) -> float | None:
        return None if self.done is None else (self.done - self.received) * 1000

    @property
    def first_token_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.received) * 1000

    def steps(self) -> list[tuple[str, float]]:
        """The moments that happened, in order: (what, when)."""
        named = [
            ("received", self.received),
            ("queued", self.queued),
            ("woke", self.woke),
            ("asked", self.asked if self.asked and self.asked > self.queued else None),
            ("dispatched", self.dispatched),
            ("first token", self.first_token),
            ("done", self.done),
        ]
        return [(what, at) for what, at in named if at is not None]
