"""What the store hands out: plain records, never raw DynamoDB items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from natrelay.wire import Endpoint, LlmStatus, Priority, Role, TaskKind, TaskState

VIRTUAL = "virtual"
# What a member that says nothing of its endpoints serves (publishers before them).
CHAT_ONLY = frozenset({Endpoint.CHAT.value})
PUBLIC = "public"
# Who owns the name of a public row (never a key id: those are 12 hex digits).
PUBLIC_OWNER = "admin:public"
AGENT = "agent"
# Who owns the name of an agent an admin applied.
AGENT_OWNER = "admin:agent"


@dataclass(frozen=True)
class MemberRecord:
    """A publisher session serving an LLM's pool."""

    session_id: str
    status: LlmStatus
    heartbeat_at: float
    max_concurrency: int | None = None
    # Its wake recipe's maxWaitSeconds; None: it cannot be woken.
    wake_max_wait: float | None = None
    # Its publisher's doorbell connection, if it keeps one.
    doorbell: str | None = None
    # The APIs it serves (`Endpoint` values).
    endpoints: frozenset[str] = CHAT_ONLY

    def alive(self, now: float, timeout: float) -> bool:
        return now - self.heartbeat_at <= timeout


@dataclass(frozen=True)
class AgentRecord:
    """What an agent means: its target (a row's name, or a backend model whose rows pool),
    its system prompt and sampling defaults (chat field names)."""

    target: str | None = None
    target_model: str | None = None
    system_prompt: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    # Published with a session (its members say whether its publisher lives).
    published: bool = False


@dataclass(frozen=True)
class LlmRecord:
    name: str
    type: str
    model: str
    status: LlmStatus
    kind: str = VIRTUAL
    tier: str | None = None
    description: str | None = None
    extra_config: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    # The key that published the row (its name's owner).
    owner: str | None = None
    last_heartbeat_at: float | None = None
    inactive_since: float | None = None
    created_at: float | None = None
    wake_max_wait: float | None = None
    wake_id: str | None = None
    wake_deadline: float | None = None
    # The member a wake in flight wakes.
    wake_target: str | None = None
    # The pool: every session that published the name and has not left, live or not.
    members: dict[str, MemberRecord] = field(default_factory=dict)
    # Pool settings an admin may set (None: the relay's defaults).
    max_queue_depth: int | None = None
    wake_after_queue_seconds: float | None = None
    # Other names clients may call it by (as its last registration declared them).
    aliases: tuple[str, ...] = ()
    # Rows that serve what this one cannot (admins set them).
    fallbacks: tuple[str, ...] = ()
    # A public row's upstream: its base URL, where its API key is kept (a SecretRef as
    # a dict), and how long a call may wait for it.
    base_url: str | None = None
    api_key_ref: dict[str, Any] | None = None
    timeout_seconds: float | None = None
    # What an admin set over the publisher's description and tier (virtual rows).
    admin_description: str | None = None
    admin_tier: str | None = None
    # A row an admin let serve other keys' agents' pools by model.
    shared_pool: bool = False
    # Set on an agent (kind `agent`): what it means.
    agent: AgentRecord | None = None

    @property
    def public(self) -> bool:
        return self.kind == PUBLIC

    def waking(self, now: float) -> bool:
        return self.wake_id is not None and (self.wake_deadline or 0) > now

    def live_members(self, now: float, timeout: float) -> list[MemberRecord]:
        return [m for m in self.members.values() if m.alive(now, timeout)]

    def pool_status(self, now: float, timeout: float) -> LlmStatus:
        """active: a live member serves now; hibernating: live members, none serving,
        some asleep (wakeable); unavailable: live members whose backends all fail to
        answer; inactive: no live member (or the row was retired). A public row is as it
        is stored (active: the relay calls its upstream itself)."""
        if self.public:
            return self.status
        live = self.live_members(now, timeout)
        if self.status is LlmStatus.INACTIVE or not live:
            return LlmStatus.INACTIVE
        if any(m.status is LlmStatus.ACTIVE for m in live):
            return LlmStatus.ACTIVE
        if all(m.status is LlmStatus.UNAVAILABLE for m in live):
            return LlmStatus.UNAVAILABLE
        return LlmStatus.HIBERNATING

    def endpoints(self, now: float, timeout: float) -> frozenset[str]:
        """The APIs the pool serves: those every live member serves (any of them may
        claim a request), so a member of an older publisher makes it chat only."""
        live = self.live_members(now, timeout)
        return frozenset.intersection(*(m.endpoints for m in live)) if live else frozenset()


@dataclass(frozen=True)
class SessionRecord:
    id: str
    names: tuple[str, ...]
    # What the publisher last said of each backend (active | hibernating).
    statuses: dict[str, LlmStatus]
    heartbeat_at: float
    generation: int
    # The publisher key that created the session: the only one that may use it.
    owner: str | None = None
    # The tasks the publisher last said it runs, and when (None: it never says).
    running: frozenset[str] = frozenset()
    confirmed_at: float | None = None
    # Its doorbell connection, if it keeps one.
    doorbell: str | None = None
    # Its publisher sends work beats while it runs tasks (the work window applies).
    work_beats: bool = False
    # The agents it published (beaten with its rows; never polled for).
    agents: tuple[str, ...] = ()

    @property
    def beaten(self) -> tuple[str, ...]:
        """Every name its heartbeat refreshes: its rows' and its agents'."""
        return self.names + self.agents


@dataclass(frozen=True)
class NewTask:
    """A task for the pool of `llm`: any live member may claim it, unless it names a
    `target_session` (a wake, which only that member runs)."""

    id: str
    kind: TaskKind
    llm: str
    created_at: float
    expires_at: float
    lease_seconds: float
    stream: bool = False
    request: bytes | None = None
    wake_id: str | None = None
    target_session: str | None = None
    # An infer task queued while a wake was in flight: the member that wake wakes.
    wake_target: str | None = None
    # The client key the task is for, and the day its usage is counted on.
    client_key: str | None = None
    usage_day: str | None = None
    # The request id its admission holds a concurrency slot under, if it does.
    slot: str | None = None
    # Tokens its key's budget reserved for it at admission (settled when it ends).
    reserved: int = 0
    # The API the request is for (an `Endpoint` value).
    endpoint: str = Endpoint.CHAT.value
    # The client's key has limits (concurrency or a token budget): its usage is written
    # before the answer goes out, so the key's next request is admitted against it.
    limited: bool = True
    # Its class, and where it sorts in its pool's queue (None: when it was created;
    # service.dispatch says how classes and aging make the order).
    priority: Priority = Priority.INTERACTIVE
    queue_order: float | None = None
    # Affinity (service.affinity): the conversation it continues (a hash), and the
    # member that ran its last turn, which alone may take it until `prefer_until`.
    affinity: str | None = None
    prefer: str | None = None
    prefer_until: float | None = None
    # The agent the client called, when it called one (its answers name it).
    agent: str | None = None
    # When the relay received the client's request (its timeline: service.timeline), and
    # the W3C trace context the task carries to its publisher and backend.
    received_at: float | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class Holder:
    """Who may post for a claimed task: the session that claimed it, of its publisher key."""

    session_id: str
    key: str


@dataclass(frozen=True)
class TaskRecord:
    id: str
    kind: TaskKind
    llm: str
    # The session that claimed it (None while it waits in the pool's queue).
    session_id: str | None
    state: TaskState
    created_at: float
    lease_seconds: float
    updated_at: float | None = None
    stream: bool = False
    wake_id: str | None = None
    request_size: int = 0
    # The API the request is for (an `Endpoint` value).
    endpoint: str = Endpoint.CHAT.value
    # Set when the request fits in the task item; otherwise the store's request(task).
    request: bytes | None = None
    claimed_by: str | None = None
    # The publisher key of the claiming session.
    claimed_key: str | None = None
    claimed_at: float | None = None
    claimed_generation: int | None = None
    lease_until: float | None = None
    attempts: int = 0
    sent_any: bool = False
    chunk_count: int = 0
    status: int | None = None
    result_size: int = 0
    result: bytes | None = None
    result_hash: str | None = None
    # The sk prefix of the accepted result's parts (None: inline, or an older item's `r`).
    result_parts: str | None = None
    error: dict[str, Any] | None = None
    client_key: str | None = None
    usage_day: str | None = None
    slot: str | None = None
    expires_at: float | None = None
    target_session: str | None = None
    wake_target: str | None = None
    # Tokens its key's budget reserved for it, and the bytes of text its chunks carried
    # (what its usage is bounded or estimated by: service.metering).
    reserved: int = 0
    relayed: int = 0
    # Its usage may be written after its answer, added up with others': its key has no
    # limits and its record too is written behind the answer (a task held in memory).
    usage_later: bool = False
    # The session it was last taken from (it missed its window, left or restarted).
    lost_by: str | None = None
    # As NewTask's.
    priority: Priority = Priority.INTERACTIVE
    queue_order: float | None = None
    affinity: str | None = None
    prefer: str | None = None
    prefer_until: float | None = None
    # Its timeline (service.timeline): when the relay received the client's request,
    # when the poll that claimed it began asking, and when its first chunk came.
    received_at: float | None = None
    asked_at: float | None = None
    first_token_at: float | None = None
    # The W3C trace context it carries to its publisher and backend.
    traceparent: str | None = None
    # The agent the client called, when it called one (its answers name it).
    agent: str | None = None

    @property
    def shown(self) -> str:
        """The model its answers name: the agent called, else the row."""
        return self.agent or self.llm

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at < now

    def held_by(self, holder: Holder) -> bool:
        """Whether `holder` holds the task (claimed by its session, of its key)."""
        return (
            self.state is TaskState.CLAIMED
            and self.claimed_by == holder.session_id
            and self.claimed_key == holder.key
        )


@dataclass(frozen=True)
class Chunk:
    seq: int
    data: bytes


@dataclass(frozen=True)
class StreamRead:
    """Chunks after a cursor, and the task as it was when they were read."""

    chunks: list[Chunk]
    task: TaskRecord | None
    complete: bool


@dataclass(frozen=True)
class KeyRecord:
    """A stored key: only the SHA-256 of its secret is kept."""

    id: str
    label: str
    role: Role
    secret_hash: str
    created_at: float
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    priority: Priority = Priority.INTERACTIVE

    def valid(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def limited(self) -> bool:
        """Whether admission must be counted before the request runs."""
        return any(v is not None for v in (self.rpm, self.concurrency, self.tokens_per_day))


@dataclass(frozen=True)
class UsageRecord:
    """What one key did on one UTC day."""

    key_id: str
    day: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    # What the budget is checked against: the tokens counted and those reserved by
    # requests in flight.
    tokens: int = 0
    # Requests refused for the key's limits (429: rpm, concurrency, tokens per day).
    refused: int = 0
    # Requests holding a concurrency slot, as `<request id>@<deadline>`.
    inflight: frozenset[str] = frozenset()
    # Requests counted in each minute of the day, by `HHMM`.
    minutes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IdempotencyRecord:
    """A client key's Idempotency-Key (only its hash is kept) and the task it started."""

    client_key: str
    key_hash: str
    task_id: str
    # The SHA-256 of the request the key was first used with.
    request_hash: str
    expires_at: float
