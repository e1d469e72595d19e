"""The one liveness rule: a publisher is alive while its last heartbeat is recent, and
holds the tasks it claimed while it proves so within its work window."""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.store import SessionRecord, TaskRecord


@dataclass(frozen=True)
class Liveness:
    timeout: float
    # How long a publisher that sends work beats may stay silent and keep its tasks.
    work_window: float = 10.0

    def alive(self, heartbeat_at: float | None, now: float) -> bool:
        return heartbeat_at is not None and now - heartbeat_at <= self.timeout

    def cutoff(self, now: float) -> float:
        """Heartbeats older than this are dead."""
        return now - self.timeout

    def window(self, session: SessionRecord) -> float:
        """How long the session may be silent and keep what it claimed."""
        return min(self.work_window, self.timeout) if session.work_beats else self.timeout

    def holds(self, session: SessionRecord | None, task: TaskRecord, now: float) -> bool:
        """Whether the session that claimed the task still holds it: it exists, is the
        generation that claimed it, and proved it lives (a beat, a poll, the claim
        itself) within its window. A session that does not hold its task loses it."""
        if session is None or session.id != task.session_id:
            return False
        if task.claimed_generation not in (None, session.generation):
            return False  # its publisher restarted: the task died with the old process
        proof = max(session.heartbeat_at, task.claimed_at or task.created_at)
        return now - proof <= self.window(session)

    @property
    def check_every(self) -> float:
        """How often a waiting client re-checks that the publisher is still there."""
        return min(5.0, self.timeout / 2, self.work_window / 4)
