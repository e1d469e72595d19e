"""The publisher protocol: what publishers send and what the relay answers them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from natrelay.wire.agents import MAX_AGENTS, AgentSpec
from natrelay.wire.contract import (
    MAX_ALIASES,
    MAX_EXTRA_CONFIG_BYTES,
    MAX_TASKS_PER_POLL,
    MAX_WAIT_SECONDS,
    Answer,
    Endpoint,
    ErrorInfo,
    LlmName,
    LlmStatus,
    Priority,
    SessionId,
    TaskId,
    TaskKind,
    WireModel,
)
from natrelay.wire.rows import SecretRef, repeated

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
    # How many requests this publisher runs at once for this name (its share of the
    # pool); shown to admins, and the most a poll hands it when it does not say `free`.
    max_concurrency: int | None = Field(default=None, ge=1, le=256)
    # The APIs this provider serves (None: chat only, as publishers before them).
    endpoints: list[Endpoint] | None = Field(default=None, min_length=1, max_length=len(Endpoint))
    # Other names clients may use for it; each is a name its key owns, like `name`.
    aliases: list[LlmName] = Field(default_factory=list, max_length=MAX_ALIASES)

    @field_validator("endpoints")
    @classmethod
    def _endpoints_once(cls, value: list[Endpoint] | None) -> list[Endpoint] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each endpoint may appear once")
        return value

    @field_validator("extra_config")
    @classmethod
    def _small_extra_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), default=str))
        if size > MAX_EXTRA_CONFIG_BYTES:
            raise ValueError(f"is {size} bytes as JSON; at most {MAX_EXTRA_CONFIG_BYTES}")
        return value


# One registration writes a row and a name claim per provider, a name claim per alias,
# the session and the list of names its key owns, in one DynamoDB transaction (at most
# 100 items).
MAX_PROVIDERS = 48
MAX_TRANSACTION_ITEMS = 100


class RegisterRequest(WireModel):
    providers: list[ProviderSpec] = Field(min_length=1, max_length=MAX_PROVIDERS)
    provider_session_id: SessionId | None = None
    # The publisher sends work beats (HeartbeatRequest `work`) every `workBeatSeconds`
    # the SessionResponse names while it runs tasks: one silent for `workWindowSeconds`
    # loses them to its pool. False (older publishers): the heartbeat timeout decides.
    work_beats: bool = False
    # Agents published with the session: their names are the key's, as the rows'.
    agents: list[AgentSpec] = Field(default_factory=list, max_length=MAX_AGENTS)

    @field_validator("providers")
    @classmethod
    def _names_once(cls, value: list[ProviderSpec]) -> list[ProviderSpec]:
        names = [p.name for p in value]
        twice = repeated(names)
        if twice:
            raise ValueError(f"each name may appear once; given more than once: {twice}")
        aliases = [a for p in value for a in p.aliases]
        lowered = {n.lower() for n in names}
        taken = sorted({a for a in aliases if a.lower() in lowered} | set(repeated(aliases)))
        if taken:
            raise ValueError(
                f"an alias may not be a name or another alias of the registration: {taken}"
            )
        return value

    @model_serializer(mode="wrap")
    def _agents_when_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a relay from before agents refuses the field: it is sent only when there are some
        data: dict[str, Any] = handler(self)
        if not self.agents:
            data.pop("agents", None)
        return data

    @model_validator(mode="after")
    def _fits(self) -> RegisterRequest:
        names = [p.name for p in self.providers] + [a for p in self.providers for a in p.aliases]
        taken = sorted(
            {a.name for a in self.agents if a.name.lower() in {n.lower() for n in names}}
        )
        taken += repeated([a.name for a in self.agents])
        if taken:
            raise ValueError(f"agents: an agent's name may not be a name or alias here: {taken}")
        aliases = len(names) - len(self.providers)
        items = 2 * len(self.providers) + aliases + 2 * len(self.agents) + 2
        if items > MAX_TRANSACTION_ITEMS:
            raise ValueError(
                f"{len(self.providers)} providers with {aliases} aliases and "
                f"{len(self.agents)} agents need {items} writes in one transaction; at most "
                f"{MAX_TRANSACTION_ITEMS} (2 per provider, 1 per alias, 2 per agent, 2 for the "
                "session and its key's names): publish fewer names per publisher"
            )
        return self


class HeartbeatRequest(WireModel):
    provider_session_id: SessionId
    # Status per provider name, for backends that went to sleep or came back.
    statuses: dict[str, LlmStatus] = Field(default_factory=dict)
    # The ids of the tasks this publisher is running (claimed and not finished). A
    # claimed task missing from it past its lease is handed out again or failed.
    # None (older publishers), or more than MAX_RUNNING_TASKS: claimed tasks are kept
    # while the session lives.
    running: list[TaskId] | None = None
    # A work beat: the publisher lives and runs `running` (sent every workBeatSeconds
    # while it runs tasks). One write: no statuses, rows or pool news in its answer.
    work: bool = False


class PollRequest(WireModel):
    provider_session_id: SessionId
    wait_seconds: float = Field(default=MAX_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    max_tasks: int = Field(default=1, ge=0, le=MAX_TASKS_PER_POLL)
    # The session generation the last SessionResponse gave; lets a relay process that
    # refreshed this session's heartbeat recently skip re-reading the session.
    generation: int | None = Field(default=None, ge=0)
    # As in HeartbeatRequest: the tasks this publisher is running.
    running: list[TaskId] | None = None
    # Free slots per provider name: a poll claims at most this many tasks of each name's
    # pool. Left out: up to maxTasks of any of the session's names (older publishers).
    free: dict[LlmName, Annotated[int, Field(ge=0, le=MAX_TASKS_PER_POLL)]] | None = Field(
        default=None, max_length=MAX_PROVIDERS
    )
    # Tasks the doorbell rang for: claimed by id, without listing the queue.
    task_ids: list[TaskId] = Field(default_factory=list, max_length=MAX_TASKS_PER_POLL)


class SessionRequest(WireModel):
    provider_session_id: SessionId


# A task's stream is at most this many chunk batches (a batch every 50 ms: 14 hours).
MAX_CHUNK_BATCHES = 1_000_000
# Statuses a completed result may carry: it becomes the client's HTTP status, with the
# body (no 1xx, 3xx or error status; not 204 or 205, which drop the body).
_BODILESS = frozenset({204, 205})


class ChunkBatch(WireModel):
    provider_session_id: SessionId
    seq: int = Field(ge=0, lt=MAX_CHUNK_BATCHES)
    # OpenAI `chat.completion.chunk` objects, in order.
    chunks: list[dict[str, Any]] = Field(min_length=1)


class TaskResult(WireModel):
    """The end of a task: `status`+`body` on success, `error` on failure.

    For a streamed infer, `body` may be null (the chunks were the answer) and
    `chunk_count` is the number of chunk batches posted. For a wake task, `body` is
    `{"ok": true, "ms": <wake time>}`.

    A completed result's `status` is the client's HTTP status: a 2xx that carries a body
    (failures come with `error`, whose status the relay maps itself).
    """

    provider_session_id: SessionId
    # `error` before `status`: the status is checked against it
    error: ErrorInfo | None = None
    status: int = Field(default=200, ge=100, le=599)
    body: Any = None
    chunk_count: int = Field(default=0, ge=0, le=MAX_CHUNK_BATCHES)

    @field_validator("status")
    @classmethod
    def _answerable(cls, value: int, info: ValidationInfo) -> int:
        completed = info.data.get("error") is None and "error" in info.data
        if completed and (not 200 <= value < 300 or value in _BODILESS):
            raise ValueError(
                f"a completed result's status must be a 2xx with a body (not {value}); "
                "post a failure with `error`"
            )
        return value


# --- relay -> publisher ----------------------------------------------------------


class MemberView(Answer):
    """One publisher session serving a pool, as clients and admins see it."""

    # A short fingerprint of the session (never the id: that is its publisher's secret).
    member: str
    status: LlmStatus
    last_heartbeat_at: str | None = None
    max_concurrency: int | None = None
    in_flight: int = 0
    free_slots: int | None = None
    # Its measured time per task (claim to result, a moving average over `measuredTasks`,
    # as the answering relay process measured it): slower members get less new work.
    seconds_per_task: float | None = None
    measured_tasks: int | None = None


class QueueClassView(Answer):
    """The requests of one priority class waiting in a pool's queue."""

    priority: Priority
    depth: int = 0
    oldest_queued_seconds: float | None = None


class LlmRow(Answer):
    name: str
    kind: str
    type: str
    # The backend's (or upstream's) model id, which may be a local path: shown to admins
    # and to the publisher that serves the row, never to clients (answers name `name`).
    model: str | None = None
    tier: str | None = None
    description: str | None = None
    status: LlmStatus
    last_heartbeat_at: str | None = None
    inactive_since: str | None = None
    created_at: str | None = None
    waking: bool = False
    # The APIs the pool serves (what every live member serves), and other names for it.
    endpoints: list[str] | None = None
    aliases: list[str] | None = None
    # The pool: its members (live publisher sessions serving the name; no session ids),
    # how many requests wait for it, and how long the oldest has waited. Filled by
    # GET /api/v1/llms/{name}.
    members: list[MemberView] | None = None
    queue_depth: int | None = None
    oldest_queued_seconds: float | None = None
    # The queue by class (interactive goes first; batch ages).
    queue_classes: list[QueueClassView] | None = None
    # Affinity (as counted by the relay process that answers): tasks of a conversation
    # taken by the member that ran it last, and by another one (it was busy, or gone).
    affinity_hits: int | None = None
    affinity_misses: int | None = None
    # What admins set (`natrelay llm apply`; shown to admins only): fallbacks and pool
    # settings, and a public row's upstream (its key only as where it is kept).
    fallbacks: list[str] | None = None
    max_queue_depth: int | None = None
    wake_after_queue_seconds: float | None = None
    shared_pool: bool | None = None
    base_url: str | None = None
    api_key: SecretRef | None = None
    timeout_seconds: float | None = None


class SessionResponse(Answer):
    provider_session_id: str
    llms: list[LlmRow]
    # Bumped by every registration of the session (a publisher restart).
    generation: int = 0
    # Where the publisher may keep a doorbell WebSocket (ws:// or wss://), if the relay
    # offers one; and the relay's heartbeat timeout, which a poll-only publisher must beat.
    doorbell_url: str | None = None
    heartbeat_timeout_seconds: float | None = None
    # How often a publisher that registered with `workBeats` beats while it runs tasks,
    # and how long a silence costs it its tasks (they go to another member of the pool).
    work_beat_seconds: float | None = None
    work_window_seconds: float | None = None
    # Tasks of the heartbeat's `running` nobody wants any more (their client went away,
    # or the relay ended or moved them): abort them, their answers would be refused.
    cancelled: list[str] | None = None


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
    # The API the request is for (`Endpoint`; a str so that a newer relay's endpoint
    # reaches an older publisher as a task it refuses, not as a poll it cannot read).
    endpoint: str = Endpoint.CHAT.value
    # The W3C trace context of the relay's span for the request (wire.trace): the
    # publisher runs the task in a span under it and sends its own to the backend.
    traceparent: str | None = None


class PollResponse(Answer):
    tasks: list[PolledTask]
    # As in SessionResponse: tasks of the poll's `running` to abort.
    cancelled: list[str] | None = None


class DoorbellMessage(Answer):
    """What the doorbell sends: `ring` (work is queued; `taskId` names it) or `pong`."""

    type: str
    task_id: str | None = None


class DoorbellPing(WireModel):
    """What the publisher sends to keep its doorbell open (API Gateway closes a
    connection idle for 10 minutes); answered with a `pong`."""

    action: str = "ping"


class ChunkAck(Answer):
    """A stored chunk batch. A cancelled task answers 409 `task_cancelled` instead."""

    seq: int
