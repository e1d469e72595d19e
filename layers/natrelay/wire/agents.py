"""Agents: a name that means a target (a row, or every row serving a backend model), a
system prompt and sampling defaults. A publisher publishes them with its session
(`AgentSpec`); an admin applies them (`AgentDocument`, `natrelay agent apply`).

Clients call an agent by its name like any model. `get` shows an agent with its life
(status, owner, ...); apply accepts and ignores those fields, so `get -o yaml | apply -f -`
changes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from natrelay.wire.contract import Answer, LlmName, LlmStatus, WireModel
from natrelay.wire.rows import MAX_APPLY_DOCUMENTS, once_each

AGENT = "agent"
MAX_SYSTEM_PROMPT = 65_536
MAX_AGENTS = 48
# Where an agent comes from: applied by an admin, or published with a session.
AgentOrigin = Literal["admin", "published"]
# What `natrelay agent get` shows that apply never writes.
AGENT_LIFECYCLE_FIELDS = frozenset(
    {"kind", "origin", "status", "owner", "createdAt", "lastHeartbeatAt", "inactiveSince"}
)


class AgentDefaults(BaseModel):
    """Sampling defaults, named and bounded as the chat API names and bounds them; a
    request's own value wins over each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 4:
            raise ValueError("give 1 to 4 stop sequences")
        return value

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("type must be text, json_object or json_schema")
        return value

    def given(self) -> dict[str, Any]:
        """The defaults set, by their chat field names."""
        return self.model_dump(exclude_none=True)


class ModelTarget(WireModel):
    """Every active row whose backend model is `model` (a pool by model)."""

    model: str = Field(min_length=1, max_length=256)


def _target(value: Any) -> Any:
    if isinstance(value, dict) and set(value) != {"model"}:
        raise ValueError("give a row name (target: gemma) or a backend model (target: {model: …})")
    return value


class _AgentFields(WireModel):
    name: LlmName
    # A row's name, or {model: …}: any row serving that backend model.
    target: LlmName | ModelTarget
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT)
    defaults: AgentDefaults = Field(default_factory=AgentDefaults)
    description: str | None = Field(default=None, max_length=2048)

    @field_validator("target", mode="before")
    @classmethod
    def _check_target(cls, value: Any) -> Any:
        return _target(value)

    @model_validator(mode="after")
    def _not_itself(self) -> _AgentFields:
        if self.target == self.name:
            raise ValueError(f"target: the agent {self.name!r} cannot target itself")
        return self

    @property
    def target_row(self) -> str | None:
        return self.target if isinstance(self.target, str) else None

    @property
    def target_model(self) -> str | None:
        return self.target.model if isinstance(self.target, ModelTarget) else None


class AgentSpec(_AgentFields):
    """An agent a publisher publishes with its session (its system prompt read from its
    file, if it names one)."""


class AgentDocument(_AgentFields):
    """An agent as `natrelay agent apply` takes it: the whole of it (what it leaves out
    is unset)."""

    @model_validator(mode="before")
    @classmethod
    def _drop_lifecycle(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in AGENT_LIFECYCLE_FIELDS}
        return data


class AgentApply(WireModel):
    documents: list[AgentDocument] = Field(min_length=1, max_length=MAX_APPLY_DOCUMENTS)

    @field_validator("documents")
    @classmethod
    def _names_once(cls, value: list[AgentDocument]) -> list[AgentDocument]:
        return once_each(value, "agent")


class AgentView(Answer):
    """An agent as `GET /api/v1/agents/{name}` shows it (owner: to admins only)."""

    name: str
    target: str | ModelTarget
    system_prompt: str | None = None
    defaults: dict[str, Any] | None = None
    description: str | None = None
    kind: str = AGENT
    origin: AgentOrigin = "admin"
    # As its target's: active, hibernating, unavailable or inactive.
    status: LlmStatus
    owner: str | None = None
    created_at: str | None = None
    last_heartbeat_at: str | None = None
    inactive_since: str | None = None


class AgentCard(Answer):
    """The `natrelay` block of an agent's model object: it is an agent, and (to admins)
    what it targets."""

    kind: str = AGENT
    target: str | ModelTarget | None = None


class AgentList(Answer):
    data: list[AgentView]


class AgentApplied(Answer):
    name: str
    # created | updated | unchanged
    action: str
    changed: list[str] = Field(default_factory=list)


class AgentApplyResult(Answer):
    data: list[AgentApplied]
