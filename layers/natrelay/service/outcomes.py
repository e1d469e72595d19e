"""How a task that did not complete reaches the client: the domain error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natrelay.errors import (
    BackendError,
    BackendUnavailableError,
    EndpointNotServedError,
    PublisherLostError,
    PublisherOfflineError,
    QueueTimeoutError,
    RelayError,
    TaskCancelledError,
    WakeFailedError,
)
from natrelay.service.metering import Request, estimated
from natrelay.store import LlmRecord, TaskRecord
from natrelay.wire import Endpoint, ErrorCode, LlmStatus, TaskState

OFFLINE_STATUS = ErrorCode.PUBLISHER_OFFLINE.status
LOST_STATUS = ErrorCode.PUBLISHER_LOST.status
# A cancelled task's record says the client went away (nginx's 499); a publisher that
# posts to it hears 409 `task_cancelled`.
CANCELLED_STATUS = 499


@dataclass(frozen=True)
class Outcome:
    """A finished task as the client sees it."""

    status: int
    body: Any


def offline_error(message: str) -> dict[str, Any]:
    return {
        "message": message,
        "code": ErrorCode.PUBLISHER_OFFLINE.value,
        "type": ErrorCode.PUBLISHER_OFFLINE.type.value,
    }


def lost_error(task: TaskRecord) -> dict[str, Any]:
    """Why a stream whose publisher was lost after it had sent bytes ended (it cannot
    move to another member), with the usage counted so far."""
    prompt, completion = estimated(Request.of(task.request, task.request_size), task.relayed)
    return {
        "message": f"the publisher of {task.llm} went offline mid-stream during task "
        f"{task.id} (a stream that has sent bytes cannot move to another member); "
        "send the request again",
        "code": ErrorCode.PUBLISHER_LOST.value,
        "type": ErrorCode.PUBLISHER_LOST.type.value,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def cancelled_error(message: str) -> dict[str, Any]:
    return {"message": message, "code": ErrorCode.TASK_CANCELLED.value}


def offline(row: LlmRecord, now: float, status: LlmStatus | None = None) -> PublisherOfflineError:
    """Why the pool cannot take a request: every live member's backend is down (`status`
    unavailable), or no member is online."""
    if status is LlmStatus.UNAVAILABLE:
        return BackendUnavailableError(
            f"the backend of {row.name!r} is not answering its publisher; try again later",
            retry_after=10,
        )
    ago = f"{now - row.last_heartbeat_at:.0f} s ago" if row.last_heartbeat_at else "never"
    return PublisherOfflineError(
        f"the publisher of {row.name!r} is offline (last heartbeat {ago}); "
        "try again when it is back"
    )


def not_served(row: LlmRecord, endpoint: Endpoint) -> EndpointNotServedError:
    return EndpointNotServedError(
        f"the model {row.name!r} does not serve {endpoint.path}", param="model"
    )


def task_error(task: TaskRecord) -> RelayError:
    """The error a client sees for a task that did not complete."""
    error = task.error or {}
    message = str(error.get("message") or f"task {task.id} {task.state.value}")
    code = error.get("code")
    if task.state is TaskState.CANCELLED:
        return TaskCancelledError(message)
    if code == ErrorCode.WAKE_FAILED:
        return WakeFailedError(message)
    if code == ErrorCode.QUEUE_TIMEOUT:
        return QueueTimeoutError(message, retry_after=5)
    if code == ErrorCode.PUBLISHER_OFFLINE:
        return PublisherOfflineError(message)
    if code == ErrorCode.PUBLISHER_LOST:
        usage = error.get("usage")
        return PublisherLostError(message, usage=usage if isinstance(usage, dict) else None)
    if code == ErrorCode.ENDPOINT_NOT_SERVED:  # the backend said so
        return EndpointNotServedError(message, param="model")
    status = task.status or 502
    return BackendError(message, status=status if 400 <= status < 500 else 502)
