"""Domain errors. The web layer maps each class to an HTTP status in one table."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base class: `code` is the OpenAI-style error code, `param` the field at fault."""

    code = "relay_error"
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class AuthError(RelayError):
    code = "invalid_api_key"
    type = "authentication_error"


class ForbiddenError(RelayError):
    code = "forbidden"
    type = "permission_error"


class InvalidRequestError(RelayError):
    code = "invalid_request"
    type = "invalid_request_error"


class PayloadTooLargeError(RelayError):
    code = "payload_too_large"
    type = "invalid_request_error"


class LlmNotFoundError(RelayError):
    code = "model_not_found"
    type = "invalid_request_error"


class SessionNotFoundError(RelayError):
    code = "session_not_found"
    type = "invalid_request_error"


class TaskNotFoundError(RelayError):
    code = "task_not_found"
    type = "invalid_request_error"


class NameTakenError(RelayError):
    code = "name_taken"
    type = "invalid_request_error"


class TaskNotClaimedError(RelayError):
    code = "task_not_claimed"
    type = "invalid_request_error"


class TaskCancelledError(RelayError):
    code = "task_cancelled"
    type = "invalid_request_error"


class ResultConflictError(RelayError):
    code = "result_conflict"
    type = "invalid_request_error"


class PublisherOfflineError(RelayError):
    """The row is inactive, or its publisher vanished mid-task."""

    code = "publisher_offline"
    type = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WakeFailedError(PublisherOfflineError):
    code = "wake_failed"


class BackendError(RelayError):
    """The publisher's backend answered with an error."""

    code = "backend_error"
    type = "upstream_error"

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class TaskTimeoutError(RelayError):
    code = "timeout"
    type = "timeout_error"

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class ConditionFailedError(RelayError):
    """A conditional write lost; `old` holds the item as it was (ReturnValues ALL_OLD)."""

    code = "condition_failed"

    def __init__(self, message: str, *, old: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.old = old or {}
