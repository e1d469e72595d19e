"""What clients and admins read: rows, models, tasks, keys and usage."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
)

from natrelay.wire.agents import AgentCard
from natrelay.wire.contract import (
    Answer,
    ErrorInfo,
    LlmStatus,
    Priority,
    Role,
    TaskKind,
    TaskState,
    WireModel,
)
from natrelay.wire.protocol import LlmRow

# --- relay -> client -------------------------------------------------------------


class LlmList(Answer):
    data: list[LlmRow]


class ModelCard(Answer):
    """An LLM as an OpenAI model object (`GET /v1/models`)."""

    id: str
    object: str = "model"
    created: int = 0
    # snake_case, as OpenAI names it (the openai SDK reads `owned_by`)
    owned_by: str = Field(default="natrelay", alias="owned_by")
    status: LlmStatus
    tier: str | None = None
    description: str | None = None
    # The APIs it serves (`chat`, `completions`, `embeddings`, `responses`, `messages`)
    # and the other names clients may call it by.
    endpoints: list[str] | None = None
    aliases: list[str] | None = None
    # Set for an agent (a named target + system prompt + defaults).
    natrelay: AgentCard | None = None


class ModelList(Answer):
    object: str = "list"
    data: list[ModelCard]


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
    # The class it queues in (interactive, batch).
    priority: Priority = Priority.INTERACTIVE
    # While it waits in its pool's queue: how many requests are ahead of it (of any
    # class: the queue serves higher classes first).
    queue_position: int | None = None


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


class KeyLimits(WireModel):
    """A key's limits, all three at once: one left out (or null) is unlimited."""

    rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    tokens_per_day: int | None = Field(default=None, ge=1, le=10**15)


class KeySpec(KeyLimits):
    """A key to create. Limits left out are unlimited; `models` left out allows all."""

    role: Role
    label: str = Field(min_length=1, max_length=200)
    # Model names or glob patterns (`llama-*`, `*:8b`), as fnmatch reads them.
    models: list[ModelPattern] | None = Field(default=None, max_length=100)
    # The class its requests queue in (a request may lower it, never raise it).
    priority: Priority = Priority.INTERACTIVE
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)


class KeyView(Answer):
    id: str
    label: str
    role: Role
    models: list[str] | None = None
    rpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None
    priority: Priority = Priority.INTERACTIVE
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
    # Requests the key's limits refused (429 rate_limit_exceeded, budget_exceeded).
    refused: int = 0


class UsageView(Answer):
    key_id: str
    days: list[UsageDay]
