"""The one liveness rule: a publisher is alive while its last heartbeat is recent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Liveness:
    timeout: float

    def alive(self, heartbeat_at: float | None, now: float) -> bool:
        return heartbeat_at is not None and now - heartbeat_at <= self.timeout

    def cutoff(self, now: float) -> float:
        """Heartbeats older than this are dead."""
        return now - self.timeout

    @property
    def check_every(self) -> float:
        """How often a waiting client re-checks that the publisher is still there."""
        return min(5.0, self.timeout / 2)
