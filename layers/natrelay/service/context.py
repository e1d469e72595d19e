"""What every part of the service shares: settings, stores, the task storage, clock,
in-process wake-ups and metrics (the composition root, service.assembly, builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from natrelay.metrics import Metrics
from natrelay.service.liveness import Liveness
from natrelay.settings import Settings
from natrelay.store import Stores, TaskStorage
from natrelay.types import Clock
from natrelay.wakeups import Pace, Wakeups


@dataclass(frozen=True)
class Context:
    settings: Settings
    stores: Stores
    # Where the service keeps tasks: every rule about a task goes through it (the
    # DynamoDB stores of the task's partition are the durable tier's, behind it).
    tasks: TaskStorage
    clock: Clock
    wakeups: Wakeups
    metrics: Metrics = field(default_factory=Metrics)
    liveness: Liveness = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "liveness", Liveness(self.settings.heartbeat_timeout_seconds))

    def pace(self) -> Pace:
        """A fresh pace for re-checking DynamoDB while waiting."""
        s = self.settings
        return Pace(s.poll_min_interval_seconds, s.poll_max_interval_seconds)

    def wait_pace(self) -> Pace:
        """A fresh pace for a client waiting on its task. With in-process wake-ups the
        re-checks are a fallback (the poll pace); without them (Lambda mode) they are how
        the answer arrives: brisk from the claim on, slower as the task runs long."""
        s = self.settings
        if self.wakeups.enabled:
            return self.pace()
        return Pace(s.wait_brisk_interval_seconds, s.poll_max_interval_seconds, s.wait_brisk_growth)

    def result_expiry(self, now: float) -> float:
        """When a task that ends now may be forgotten."""
        return now + self.settings.result_retention_seconds

    def chunk_expiry(self, now: float) -> float:
        """When a chunk posted now may be forgotten: no earlier than its task, which ends
        within max_task_seconds and is kept for the result retention after that."""
        return now + self.settings.max_task_seconds + self.settings.result_retention_seconds
