"""What the store hands out: plain records, never raw DynamoDB items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from natrelay.wire import LlmStatus, TaskKind, TaskState

VIRTUAL = "virtual"


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
    last_heartbeat_at: float | None = None
    inactive_since: float | None = None
    created_at: float | None = None
    wake_max_wait: float | None = None
    wake_id: str | None = None
    wake_deadline: float | None = None

    def waking(self, now: float) -> bool:
        return self.wake_id is not None and (self.wake_deadline or 0) > now


@dataclass(frozen=True)
class SessionRecord:
    id: str
    names: tuple[str, ...]
    # What the publisher last said of each backend (active | hibernating).
    statuses: dict[str, LlmStatus]
    heartbeat_at: float
    generation: int


@dataclass(frozen=True)
class NewTask:
    id: str
    kind: TaskKind
    llm: str
    session_id: str
    created_at: float
    expires_at: float
    lease_seconds: float
    stream: bool = False
    request: bytes | None = None
    wake_id: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    id: str
    kind: TaskKind
    llm: str
    session_id: str
    state: TaskState
    created_at: float
    lease_seconds: float
    updated_at: float | None = None
    stream: bool = False
    wake_id: str | None = None
    request_size: int = 0
    # Set when the request fits in the task item; otherwise the store's request(task).
    request: bytes | None = None
    claimed_by: str | None = None
    claimed_generation: int | None = None
    lease_until: float | None = None
    attempts: int = 0
    sent_any: bool = False
    chunk_count: int = 0
    status: int | None = None
    result_size: int = 0
    result: bytes | None = None
    result_hash: str | None = None
    error: dict[str, Any] | None = None


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
