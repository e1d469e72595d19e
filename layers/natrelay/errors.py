"""Domain errors, each naming its `ErrorCode` (which carries the HTTP status and the
OpenAI error type the web layer answers it with)."""

from __future__ import annotations

from natrelay.wire import ErrorCode


class RelayError(Exception):
    """Base class: `code` is the OpenAI-style error code, `param` the field at fault."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class AuthError(RelayError):
    code = ErrorCode.INVALID_API_KEY


class ForbiddenError(RelayError):
    code = ErrorCode.FORBIDDEN


class InvalidRequestError(RelayError):
    code = ErrorCode.INVALID_REQUEST


class PayloadTooLargeError(RelayError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class LlmNotFoundError(RelayError):
    code = ErrorCode.MODEL_NOT_FOUND


class SessionNotFoundError(RelayError):
    code = ErrorCode.SESSION_NOT_FOUND


class TaskNotFoundError(RelayError):
    code = ErrorCode.TASK_NOT_FOUND


class NameTakenError(RelayError):
    code = ErrorCode.NAME_TAKEN


class TaskNotClaimedError(RelayError):
    code = ErrorCode.TASK_NOT_CLAIMED


class TaskCancelledError(RelayError):
    code = ErrorCode.TASK_CANCELLED


class TaskMovedError(RelayError):
    """The task went to another member: the caller's session missed its work window."""

    code = ErrorCode.TASK_MOVED


class PublisherLostError(RelayError):
    """A stream's publisher vanished after the stream had sent bytes; `usage`: what the
    stream used so far (its error event carries it)."""

    code = ErrorCode.PUBLISHER_LOST

    def __init__(self, message: str, *, usage: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class ResultConflictError(RelayError):
    code = ErrorCode.RESULT_CONFLICT


class PublisherOfflineError(RelayError):
    """The row is inactive, or its publisher vanished mid-task. `retryable`: a retry
    may succeed soon (e.g. a wake is under way), so clients may retry on their own."""

    code = ErrorCode.PUBLISHER_OFFLINE

    def __init__(self, message: str, *, retry_after: int = 30, retryable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.retryable = retryable


class BackendUnavailableError(PublisherOfflineError):
    """The publisher is online but reports its backend down (and not wakeable)."""

    code = ErrorCode.BACKEND_UNAVAILABLE


class WakeFailedError(PublisherOfflineError):
    code = ErrorCode.WAKE_FAILED


class BackendError(RelayError):
    """The publisher's backend answered with an error: `status` is the one it sent on (its
    code's, 502, by default)."""

    code = ErrorCode.BACKEND_ERROR

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status or self.code.status


class UpstreamError(BackendError):
    """A public row's upstream failed, could not be reached, or took too long (504).
    `unavailable`: it could not serve at all (a fallback may). `retryable`: a client's
    own retry may get an answer without running the request twice (False: the upstream
    may still run it, or the same thing would fail again)."""

    code = ErrorCode.UPSTREAM_ERROR

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        unavailable: bool = False,
        retryable: bool = True,
    ) -> None:
        super().__init__(message, status=status)
        self.unavailable = unavailable
        self.retryable = retryable


class TaskTimeoutError(RelayError):
    code = ErrorCode.TIMEOUT

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class NameOwnedError(RelayError):
    """The name belongs to another publisher key (until an admin releases it)."""

    code = ErrorCode.NAME_OWNED


class NameLimitError(RelayError):
    """The publisher key owns as many names as it may (NATRELAY_MAX_NAMES_PER_KEY)."""

    code = ErrorCode.NAME_LIMIT


class RowChangedError(RelayError):
    """A row changed while an admin's apply ran: nothing was applied."""

    code = ErrorCode.ROW_CHANGED


class SessionForbiddenError(RelayError):
    """The session does not exist or belongs to another key: the same answer for both."""

    code = ErrorCode.SESSION_FORBIDDEN


class KeyNotFoundError(RelayError):
    code = ErrorCode.KEY_NOT_FOUND


class RateLimitError(RelayError):
    """Over the key's requests per minute or concurrent requests."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceededError(RateLimitError):
    """Over the key's tokens per day."""

    code = ErrorCode.BUDGET_EXCEEDED


class QueueFullError(RateLimitError):
    """Every member of the pool is busy and its queue holds as many as it may."""

    code = ErrorCode.QUEUE_FULL


class QueueTimeoutError(PublisherOfflineError):
    """The request waited its longest in the pool's queue; nobody took it."""

    code = ErrorCode.QUEUE_TIMEOUT


class EndpointNotServedError(RelayError):
    """The model exists but does not serve this API (embeddings of a chat-only model)."""

    code = ErrorCode.ENDPOINT_NOT_SERVED
