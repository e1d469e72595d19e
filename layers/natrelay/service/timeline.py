"""Where a request spent its time, from its task's own timestamps.

    received ─relay─ queued ─wake─ woke ─queue─ asked ─dispatch─ dispatched ─backend─ done
                                                                      └ first token

* relay: the relay's own work from the request's arrival (its key checked, its body
  read) until the task was queued (its key's limits, its row, starting a wake);
* wake: waiting for a sleeping backend to wake (only when the request started a wake or
  joined one);
* queue: no member was asking for work (every member busy, or between its polls, or a
  doorbell ring on its way to it);
* dispatch: from a member's poll (or claim) asking, to the task being handed to it;
* backend: the publisher and its backend, from the hand-over (or, when the task was
  handed over while its wake was still under way, from the wake's end) to the answer's
  end (its first token splits it for streams).

The legs add up to `done - received`: the client's time, less the way back to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.store import TaskRecord

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

    @classmethod
    def of(cls, task: TaskRecord, wake: TaskRecord | None = None) -> Marks:
        """The moments of a task, from its record (and its wake's: when that ended)."""
        woke = wake.updated_at if wake is not None and wake.state.done else None
        return cls(
            received=task.received_at or task.created_at,
            queued=task.created_at,
            woke=woke,
            asked=task.asked_at,
            dispatched=task.claimed_at,
            first_token=task.first_token_at,
            done=task.updated_at if task.state.done else None,
        )

    def legs(self) -> dict[str, float]:
        """Each leg in ms, as far as the request got (a leg not reached is left out).
        Each is ≥ 0, and together they are `done - received` once the request is done."""
        out = {"relay": max(0.0, self.queued - self.received)}
        ready = self.queued
        if self.woke is not None:
            woke = self.woke if self.done is None else min(self.woke, self.done)
            ready = max(self.queued, woke)
            out["wake"] = ready - self.queued
        if self.dispatched is None:
            if self.done is not None:  # it ended without a member taking it
                out["queue"] = max(0.0, self.done - ready)
            return _ms(out)
        # the backend's part starts once the task is handed over and its backend awake
        start = max(self.dispatched, ready)
        if self.done is not None:
            start = min(start, self.done)
        asked = min(max(self.asked if self.asked is not None else ready, ready), start)
        out["queue"] = asked - ready
        out["dispatch"] = start - asked
        if self.done is not None:
            out["backend"] = self.done - start
        return _ms(out)

    @property
    def whole_ms(self) -> float | None:
        return None if self.done is None else (self.done - self.received) * 1000

    @property
    def first_token_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.received) * 1000

    def steps(self) -> list[tuple[str, float]]:
        """The moments that happened, in the order they happened: (what, when). A poll
        that was already asking when the task was queued is no step of it."""
        named = [
            ("received", self.received),
            ("queued", self.queued),
            ("woke", self.woke),
            ("asked", self.asked if self.asked and self.asked > self.queued else None),
            ("dispatched", self.dispatched),
            ("first token", self.first_token),
            ("done", self.done),
        ]
        return sorted(((what, at) for what, at in named if at is not None), key=lambda s: s[1])


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {k: v * 1000 for k, v in seconds.items()}
