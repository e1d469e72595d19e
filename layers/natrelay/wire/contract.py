"""The contract both sides share: limits, enums, error codes, paths, base models."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

MAX_WAIT_SECONDS = 25.0
MAX_TASKS_PER_POLL = 32

# The header a publisher names its session in where there is no body: when its doorbell
# (docs/protocol.md, a WebSocket that rings when work is queued) connects, and when it
# fetches a claimed task's request (never in a URL: URLs reach access logs).
SESSION_HEADER = "X-Natrelay-Session"
DOORBELL_SESSION_HEADER = SESSION_HEADER
# A client's request may lower its key's priority class (never raise it) in this header.
PRIORITY_HEADER = "X-Natrelay-Priority"
# On a client's request, the conversation it continues (affinity: the pool's member that
# ran its last turn, whose prefix cache holds it, takes it when it can).
CONVERSATION_HEADER = SESSION_HEADER
# Other names one provider may be published under.
MAX_ALIASES = 8
# A provider's extraConfig, as compact JSON.
MAX_EXTRA_CONFIG_BYTES = 16 * 1024

# A name: 1 to 128 characters, starting with a letter or digit, not ending in a dot
# (`a-echo.` reads as `a-echo`). Names are owned case-insensitively.
LlmName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9._:/@-]{0,126}[A-Za-z0-9_:/@-])?$"),
]
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# A poll or heartbeat confirms at most this many running tasks (a longer list: none).
MAX_RUNNING_TASKS = 1024


class LlmStatus(StrEnum):
    ACTIVE = "active"
    HIBERNATING = "hibernating"
    INACTIVE = "inactive"
    # The publisher is online but its backend does not answer and cannot be woken.
    UNAVAILABLE = "unavailable"


class Role(StrEnum):
    """What a key may do: manage everything, call models, or publish them."""

    ADMIN = "admin"
    CLIENT = "client"
    PUBLISHER = "publisher"


class Priority(StrEnum):
    """A request's class in its pool's queue: interactive work goes before batch work
    (which ages, so it is never starved)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """0 for the highest class; a request may only move to a higher rank."""
        return _PRIORITY_RANKS[self]


_PRIORITY_RANKS = {Priority.INTERACTIVE: 0, Priority.BATCH: 1}


class TaskKind(StrEnum):
    INFER = "infer"
    WAKE = "wake"


class Endpoint(StrEnum):
    """The APIs a task can be a request to; each is relayed to the backend path of the
    same name (`path`). Tasks of older relays carry none: chat."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    MESSAGES = "messages"

    @property
    def path(self) -> str:
        """Its path on the relay, and (under the backend's `/v1`) on the backend."""
        return _ENDPOINT_PATHS[self]


class TaskState(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class ErrorType(StrEnum):
    """The OpenAI error `type` of an error body: what kind of failure it is."""

    INVALID_REQUEST = "invalid_request_error"
    AUTHENTICATION = "authentication_error"
    PERMISSION = "permission_error"
    RATE_LIMIT = "rate_limit_error"
    TIMEOUT = "timeout_error"
    SERVER = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    UPSTREAM = "upstream_error"


class ErrorCode(StrEnum):
    """The `code` of every error body the relay sends (and the publisher reports); each
    carries the HTTP status and the OpenAI `type` the relay answers it with (`status`,
    `type`: one table, `_ERROR_ANSWERS`)."""

    INVALID_API_KEY = "invalid_api_key"
    FORBIDDEN = "forbidden"
    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    HTTP_ERROR = "http_error"
    MODEL_NOT_FOUND = "model_not_found"
    SESSION_NOT_FOUND = "session_not_found"
    TASK_NOT_FOUND = "task_not_found"
    NAME_TAKEN = "name_taken"
    NAME_OWNED = "name_owned"
    NAME_LIMIT = "name_limit"
    ROW_CHANGED = "row_changed"
    SESSION_FORBIDDEN = "session_forbidden"
    KEY_NOT_FOUND = "key_not_found"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    BUDGET_EXCEEDED = "budget_exceeded"
    TASK_NOT_CLAIMED = "task_not_claimed"
    TASK_CANCELLED = "task_cancelled"
    # The task went to another member of its pool: its publisher missed its liveness
    # window (frozen, cut off). Drop it and free its slot; never post it again.
    TASK_MOVED = "task_moved"
    RESULT_CONFLICT = "result_conflict"
    PUBLISHER_OFFLINE = "publisher_offline"
    # A stream's publisher vanished after it had sent bytes (a stream cannot move).
    PUBLISHER_LOST = "publisher_lost"
    WAKE_FAILED = "wake_failed"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"
    UPSTREAM_ERROR = "upstream_error"
    PUBLISHER_ERROR = "publisher_error"
    TIMEOUT = "timeout"
    ENDPOINT_NOT_SERVED = "endpoint_not_served"
    INTERNAL_ERROR = "internal_error"

    @property
    def status(self) -> int:
        """The HTTP status of its answer. A backend's or an upstream's own 4xx or 504
        passes through `backend_error` and `upstream_error`; `http_error` answers the
        status the router raised."""
        return _ERROR_ANSWERS[self][0]

    @property
    def type(self) -> ErrorType:
        """The OpenAI error `type` of its answer."""
        return _ERROR_ANSWERS[self][1]


class Paths:
    """Every route of the relay, as Starlette path templates (`{task_id}` etc.)."""

    HEALTH = "/healthz"
    METRICS = "/metrics"
    OPENAPI = "/openapi.json"
    PROVIDER = "/api/v1/llms/_provider"
    REGISTER = f"{PROVIDER}-register"
    HEARTBEAT = f"{PROVIDER}-heartbeat"
    POLL = f"{PROVIDER}-poll"
    DEREGISTER = f"{PROVIDER}-deregister"
    # A poll that never waits (the doorbell's): served beside the long-polls, not by them.
    CLAIM = f"{PROVIDER}-claim"
    # The doorbell's WebSocket where the relay serves it itself (natrelay dev, self-hosted).
    DOORBELL = f"{PROVIDER}-doorbell"
    PROVIDER_TASK = f"{PROVIDER}-task/{{task_id}}"
    TASK_REQUEST = f"{PROVIDER_TASK}/request"
    TASK_CHUNKS = f"{PROVIDER_TASK}/chunks"
    TASK_RESULT = f"{PROVIDER_TASK}/result"
    LLMS = "/api/v1/llms"
    LLM = "/api/v1/llms/{name}"
    # Create or change rows from documents (admins): all of them, or none.
    LLMS_APPLY = "/api/v1/llms/_apply"
    INFER = "/api/v1/llms/{name}/infer"
    TASK = "/api/v1/tasks/{task_id}"
    TASK_EVENTS = "/api/v1/tasks/{task_id}/events"
    AGENTS = "/api/v1/agents"
    AGENT = "/api/v1/agents/{name}"
    # Create or replace agents from documents (admins): all of them, or none.
    AGENTS_APPLY = "/api/v1/agents/_apply"
    KEYS = "/api/v1/keys"
    KEY = "/api/v1/keys/{key_id}"
    KEY_USAGE = "/api/v1/keys/{key_id}/usage"
    USAGE = "/api/v1/usage"
    # A public row's API key, where the relay may write it (natrelay dev); admins.
    SECRET = "/api/v1/secrets/{name}"  # noqa: S105 - a path
    MODELS = "/v1/models"
    MODEL = "/v1/models/{model}"
    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"
    EMBEDDINGS = "/v1/embeddings"
    RESPONSES = "/v1/responses"
    MESSAGES = "/v1/messages"
    # The console (HTML, admins; a login form opens its session): web.console.
    CONSOLE = "/console"
    CONSOLE_LOGIN = "/console/login"
    CONSOLE_LOGOUT = "/console/logout"
    CONSOLE_USAGE = "/console/usage"
    CONSOLE_LATENCY = "/console/latency"
    CONSOLE_REQUESTS = "/console/requests"
    CONSOLE_REQUEST = "/console/requests/{task_id}"
    CONSOLE_KEYS = "/console/keys"
    # Forms post here (the key or row they change is a field of the form).
    CONSOLE_KEY_LIMITS = "/console/keys/limits"
    CONSOLE_KEY_REVOKE = "/console/keys/revoke"
    CONSOLE_ROWS = "/console/rows"
    CONSOLE_ROW_DELETE = "/console/rows/delete"
    # The status page became the console's overview: it sends browsers there.
    STATUS = "/status"

    @staticmethod
    def route(template: str) -> str:
        """The Starlette route of a template: names may contain slashes (`{name:path}`)."""
        return template.replace("{name}", "{name:path}").replace("{model}", "{model:path}")


_ENDPOINT_PATHS = {
    Endpoint.CHAT: Paths.CHAT,
    Endpoint.COMPLETIONS: Paths.COMPLETIONS,
    Endpoint.EMBEDDINGS: Paths.EMBEDDINGS,
    Endpoint.RESPONSES: Paths.RESPONSES,
    Endpoint.MESSAGES: Paths.MESSAGES,
}


_ERROR_ANSWERS: dict[ErrorCode, tuple[int, ErrorType]] = {
    ErrorCode.INVALID_API_KEY: (401, ErrorType.AUTHENTICATION),
    ErrorCode.FORBIDDEN: (403, ErrorType.PERMISSION),
    ErrorCode.INVALID_REQUEST: (400, ErrorType.INVALID_REQUEST),
    ErrorCode.PAYLOAD_TOO_LARGE: (413, ErrorType.INVALID_REQUEST),
    ErrorCode.NOT_FOUND: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.METHOD_NOT_ALLOWED: (405, ErrorType.INVALID_REQUEST),
    ErrorCode.HTTP_ERROR: (400, ErrorType.INVALID_REQUEST),
    ErrorCode.MODEL_NOT_FOUND: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.SESSION_NOT_FOUND: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.TASK_NOT_FOUND: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.NAME_TAKEN: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.NAME_OWNED: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.NAME_LIMIT: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.ROW_CHANGED: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.SESSION_FORBIDDEN: (403, ErrorType.PERMISSION),
    ErrorCode.KEY_NOT_FOUND: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.RATE_LIMIT_EXCEEDED: (429, ErrorType.RATE_LIMIT),
    ErrorCode.QUEUE_FULL: (429, ErrorType.RATE_LIMIT),
    ErrorCode.QUEUE_TIMEOUT: (503, ErrorType.SERVICE_UNAVAILABLE),
    ErrorCode.BUDGET_EXCEEDED: (429, ErrorType.RATE_LIMIT),
    ErrorCode.TASK_NOT_CLAIMED: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.TASK_CANCELLED: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.TASK_MOVED: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.RESULT_CONFLICT: (409, ErrorType.INVALID_REQUEST),
    ErrorCode.PUBLISHER_OFFLINE: (503, ErrorType.SERVICE_UNAVAILABLE),
    ErrorCode.PUBLISHER_LOST: (502, ErrorType.UPSTREAM),
    ErrorCode.WAKE_FAILED: (503, ErrorType.SERVICE_UNAVAILABLE),
    ErrorCode.BACKEND_UNAVAILABLE: (503, ErrorType.SERVICE_UNAVAILABLE),
    ErrorCode.BACKEND_ERROR: (502, ErrorType.UPSTREAM),
    ErrorCode.UPSTREAM_ERROR: (502, ErrorType.UPSTREAM),
    # What a publisher reports when a task broke on its own bug.
    ErrorCode.PUBLISHER_ERROR: (500, ErrorType.SERVER),
    ErrorCode.TIMEOUT: (504, ErrorType.TIMEOUT),
    ErrorCode.ENDPOINT_NOT_SERVED: (404, ErrorType.INVALID_REQUEST),
    ErrorCode.INTERNAL_ERROR: (500, ErrorType.SERVER),
}


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused.

    Each model builds its validator when first used, not when imported: a Lambda cold
    start uses a few of them (docs/performance.md, "Cold starts")."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        defer_build=True,
    )


class Answer(WireModel):
    """What the relay sends back: unknown fields are ignored, so a newer relay can add
    fields without breaking older publishers and clients."""

    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Answer):
    message: str
    type: str = ErrorType.SERVER.value
    code: str | None = None
    param: str | None = None


class ErrorBody(Answer):
    """Every error the relay answers: OpenAI-style."""

    error: ErrorInfo


def fingerprint(session_id: str) -> str:
    """What logs and views show of a session id (the id itself is a secret of its
    publisher): the same on the relay's and the publisher's side."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:10]
