"""Wire models shared by the relay API and the publisher (pydantic only, no server deps)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

MAX_WAIT_SECONDS = 25.0
MAX_TASKS_PER_POLL = 32

LlmName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


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


class TaskKind(StrEnum):
    INFER = "infer"
    WAKE = "wake"


class TaskState(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)


class ErrorCode(StrEnum):
    """The `code` of every error body the relay sends (and the publisher reports)."""

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
    SESSION_FORBIDDEN = "session_forbidden"
    KEY_NOT_FOUND = "key_not_found"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded"
    TASK_NOT_CLAIMED = "task_not_claimed"
    TASK_CANCELLED = "task_cancelled"
    RESULT_CONFLICT = "result_conflict"
    PUBLISHER_OFFLINE = "publisher_offline"
    WAKE_FAILED = "wake_failed"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"
    PUBLISHER_ERROR = "publisher_error"
    TIMEOUT = "timeout"
    INTERNAL_ERROR = "internal_error"


class Paths:
    """Every route of the relay, as Starlette path templates (`{task_id}` etc.)."""

    HEALTH = "/healthz"
    PROVIDER = "/api/v1/llms/_provider"
    REGISTER = f"{PROVIDER}-register"
    HEARTBEAT = f"{PROVIDER}-heartbeat"
    POLL = f"{PROVIDER}-poll"
    DEREGISTER = f"{PROVIDER}-deregister"
    PROVIDER_TASK = f"{PROVIDER}-task/{{task_id}}"
    TASK_REQUEST = f"{PROVIDER_TASK}/request"
    TASK_CHUNKS = f"{PROVIDER_TASK}/chunks"
    TASK_RESULT = f"{PROVIDER_TASK}/result"
    LLMS = "/api/v1/llms"
    LLM = "/api/v1/llms/{name}"
    INFER = "/api/v1/llms/{name}/infer"
    TASK = "/api/v1/tasks/{task_id}"
    TASK_EVENTS = "/api/v1/tasks/{task_id}/events"
    KEYS = "/api/v1/keys"
    KEY = "/api/v1/keys/{key_id}"
    KEY_USAGE = "/api/v1/keys/{key_id}/usage"
    USAGE = "/api/v1/usage"
    MODELS = "/v1/models"
    MODEL = "/v1/models/{model}"
    CHAT = "/v1/chat/completions"

    @staticmethod
    def route(template: str) -> str:
        """The Starlette route of a template: names may contain slashes (`{name:path}`)."""
        return template.replace("{name}", "{name:path}").replace("{model}", "{model:path}")


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Answer(WireModel):
    """What the relay sends back: unknown fields are ignored, so a newer relay can add
    fields without breaking older publishers and clients."""

    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Answer):
    message: str
    type: str = "server_error"
    code: str | None = None
    param: str | None = None


# --- publisher -> relay ----------------------------------------------------------


class ProviderSpec(WireModel):
    name: LlmName
    type: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=256)
    tier: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=2048)
    extra_config: dict[str, Any] = Field(default_factory=dict)
    initial_status: LlmStatus = LlmStatus.ACTIVE
    # How long a wake of this provider may take (its recipe's maxWaitSeconds); the
    # relay adds a margin and uses it as the wake marker's deadline. None: cannot wake.
    wake_max_wait_seconds: float | None = Field(default=None, gt=0, le=3600)


# One registration writes a row and a name claim per provider plus the session, in one
# DynamoDB transaction (at most 100 items).
MAX_PROVIDERS = 48


class RegisterRequest(WireModel):
    providers: list[ProviderSpec] = Field(min_length=1, max_length=MAX_PROVIDERS)
    provider_session_id: SessionId | None = None


class HeartbeatRequest(WireModel):
    provider_session_id: SessionId
    # Status per provider name, for backends that went to sleep or came back.
    statuses: dict[str, LlmStatus] = Field(default_factory=dict)


class PollRequest(WireModel):
    provider_session_id: SessionId
    wait_seconds: float = Field(default=MAX_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    max_tasks: int = Field(default=1, ge=0, le=MAX_TASKS_PER_POLL)
    # The session generation the last SessionResponse gave; lets a relay process that
    # refreshed this session's heartbeat recently skip re-reading the session.
    generation: int | None = Field(default=None, ge=0)


class SessionRequest(WireModel):
    provider_session_id: SessionId


class ChunkBatch(WireModel):
    provider_session_id: SessionId
    seq: int = Field(ge=0)
    # OpenAI `chat.completion.chunk` objects, in order.
    chunks: list[dict[str, Any]] = Field(min_length=1)


class TaskResult(WireModel):
    """The end of a task: `status`+`body` on success, `error` on failure.

    For a streamed infer, `body` may be null (the chunks were the answer) and
    `chunk_count` is the number of chunk batches posted. For a wake task, `body` is
    `{"ok": true, "ms": <wake time>}`.
    """

    provider_session_id: SessionId
    status: int = Field(default=200, ge=100, le=599)
    body: Any = None
    error: ErrorInfo | None = None
    chunk_count: int = Field(default=0, ge=0)


# --- relay -> publisher ----------------------------------------------------------


class LlmRow(Answer):
    name: str
    kind: str
    type: str
    model: str
    tier: str | None = None
    description: str | None = None
    status: LlmStatus
    last_heartbeat_at: str | None = None
    inactive_since: str | None = None
    created_at: str | None = None
    waking: bool = False


class SessionResponse(Answer):
    provider_session_id: str
    llms: list[LlmRow]
    # Bumped by every registration of the session (a publisher restart).
    generation: int = 0


class PolledTask(Answer):
    id: str
    kind: TaskKind
    llm: str
    created_at: str
    stream: bool = False
    # The chat-completions body for `infer`; None when it was too large to inline,
    # in which case the publisher GETs `Paths.TASK_REQUEST`.
    request: dict[str, Any] | None = None
    request_size: int = 0
    # For `infer` tasks queued while a wake was in flight: the wake to wait for.
    wake_id: str | None = None
    lease_seconds: float = 0


class PollResponse(Answer):
    tasks: list[PolledTask]


class ChunkAck(Answer):
    """A stored chunk batch. A cancelled task answers 409 `task_cancelled` instead."""

    seq: int


# --- relay -> client -------------------------------------------------------------


class LlmList(Answer):
    data: list[LlmRow]


class TaskView(Answer):
    id: str
    kind: TaskKind
    llm: str
    state: TaskState
    created_at: str
    updated_at: str | None = None
    stream: bool = False
    chunk_count: int = 0
    status: int | None = None
    result: Any = None
    error: ErrorInfo | None = None


# --- keys and usage (admin API) ----------------------------------------------------

_MODEL_PATTERN = re.compile(r"^[A-Za-z0-9._:/@*?\[\]!-]{1,128}$")


def _model_pattern(value: str) -> str:
    if not _MODEL_PATTERN.match(value) or value.count("[") != value.count("]"):
        raise ValueError(
            f"{value!r} is not a model name or glob pattern (letters, digits, . _ : / @ - "
            "and the wildcards * ? [...])"
        )
    return value


ModelPattern = Annotated[str, AfterValidator(_model_pattern)]


class KeySpec(WireModel):
    """A key to create. Limits left out are unlimited; `models` left out allows all."""

    role: Role
    label: str = Field(min_length=1, max_length=200)
    # Model names or glob patterns (`llama-*`, `*:8b`), as fnmatch reads them.
    models: list[ModelPattern] | None = Field(default=None, max_length=100)
    rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    tokens_per_day: int | None = Field(default=None, ge=1)
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)


class KeyView(Answer):
    id: str
    label: str
    role: Role
    models: list[str] | None = None
    rpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    # active | revoked | expired
    status: str


class KeyCreated(KeyView):
    """The key as created, with its secret: shown this once, never stored."""

    secret: str


class KeyList(Answer):
    data: list[KeyView]


class UsageDay(Answer):
    date: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0


class UsageView(Answer):
    key_id: str
    days: list[UsageDay]
