"""How a task that did not complete reaches the client: the domain error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natrelay.errors import (
    BackendError,
    PublisherOfflineError,
    RelayError,
    TaskCancelledError,
    WakeFailedError,
)
from natrelay.store import LlmRecord, TaskRecord
from natrelay.wire import TaskState


@dataclass(frozen=True)
class Outcome:
    """A finished task as the client sees it."""

    status: int
    body: Any


def offline_error(message: str) -> dict[str, Any]:
    return {"message": message, "code": "publisher_offline", "type": "service_unavailable"}


def offline(row: LlmRecord, now: float) -> PublisherOfflineError:
    ago = f"{now - row.last_heartbeat_at:.0f} s ago" if row.last_heartbeat_at else "never"
    return PublisherOfflineError(
        f"the publisher of {row.name!r} is offline (last heartbeat {ago}); "
        "try again when it is back"
    )


def task_error(task: TaskRecord) -> RelayError:
    """The error a client sees for a task that did not complete."""
    error = task.error or {}
    message = str(error.get("message") or f"task {task.id} {task.state.value}")
    code = error.get("code")
    if task.state is TaskState.CANCELLED:
        return TaskCancelledError(message)
    if code == "wake_failed":
        return WakeFailedError(message)
    if code == "publisher_offline":
        return PublisherOfflineError(message)
    status = task.status or 502
    return BackendError(message, status=status if 400 <= status < 500 else 502)
