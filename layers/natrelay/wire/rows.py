"""Admin-managed rows: what `natrelay llm apply` sends, and the settings a row shows.

A document names one row. `kind: public` rows (an upstream the relay calls itself) are
made and changed by apply; of `virtual` rows (published from behind NAT) apply changes
only what admins own: description, tier, fallbacks and pool settings. Fields left out
stay as they are; `null` clears one. Lifecycle and ownership fields, as `get` shows
them, are accepted and ignored, so `get -o yaml | apply -f -` changes nothing.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from natrelay.wire.contract import Answer, LlmName, WireModel

VIRTUAL = "virtual"
PUBLIC = "public"
# The upstream types a public row may have (any OpenAI-compatible server).
PUBLIC_TYPES = ("openai",)
MAX_FALLBACKS = 5
# One apply is one DynamoDB transaction (at most 100 items; a new public row is two).
MAX_APPLY_DOCUMENTS = 40
MAX_UPSTREAM_TIMEOUT = 900.0
# Where the relay may read API keys from (its IAM permission is scoped to these).
SECRET_PREFIX = "natrelay/"  # noqa: S105 - a name prefix, not a secret
PARAMETER_PREFIX = "/natrelay/"
# Says which row answered a request (the one asked for, or one of its fallbacks).
SERVED_BY_HEADER = "x-natrelay-served-by"

# What `get` shows that apply never writes: the row's life, its pool, its owner.
LIFECYCLE_FIELDS = frozenset(
    {
        "status",
        "lastHeartbeatAt",
        "inactiveSince",
        "createdAt",
        "waking",
        "members",
        "queueDepth",
        "oldestQueuedSeconds",
        "queueClasses",
        "affinityHits",
        "affinityMisses",
        "sessionId",
        # what a publisher's session file or a seed-era export may carry
        "providerSessionId",
        "owner",
        # what the row's publishers declare (their config), not an admin's to set
        "endpoints",
        "aliases",
    }
)


class SecretRef(WireModel):
    """Where an API key lives: an AWS Secrets Manager secret (its name or ARN; a JSON
    secret's `apiKey` field, or the whole string) or an SSM SecureString parameter."""

    secrets_manager: str | None = Field(default=None, min_length=1, max_length=2048)
    ssm: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one_place(self) -> SecretRef:
        if (self.secrets_manager is None) == (self.ssm is None):
            raise ValueError("give exactly one of secretsManager (a secret) or ssm (a parameter)")
        if self.secrets_manager is not None:
            name = self.secrets_manager
            if ":secret:" in name:
                name = name.split(":secret:", 1)[1]
            if not name.startswith(SECRET_PREFIX):
                raise ValueError(
                    f"the relay reads only secrets named {SECRET_PREFIX}…; "
                    f"{self.secrets_manager!r} is not one"
                )
        if self.ssm is not None and not self.ssm.startswith(PARAMETER_PREFIX):
            raise ValueError(
                f"the relay reads only parameters under {PARAMETER_PREFIX}; {self.ssm!r} is not"
            )
        return self

    @property
    def describe(self) -> str:
        """Where the key is, for messages (never the key)."""
        if self.secrets_manager is not None:
            return f"secret {self.secrets_manager}"
        return f"parameter {self.ssm}"


# What Secrets Manager allows in a name, under the prefix the relay may read.
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")


def secret_name(name: str) -> str:
    """`name` if the relay may write and read it as a secret (ValueError otherwise)."""
    if not name.startswith(SECRET_PREFIX) or len(name) == len(SECRET_PREFIX):
        raise ValueError(
            f"the relay keeps API keys in secrets named {SECRET_PREFIX}…; {name!r} is not one"
        )
    if not _SECRET_NAME.match(name):
        raise ValueError(f"{name!r}: a secret's name has letters, digits and / _ + = . @ - only")
    return name


class SecretPut(WireModel):
    """A secret's new value (`PUT /api/v1/secrets/{name}`): never echoed, never logged."""

    value: str = Field(min_length=1, max_length=65536)


class SecretView(Answer):
    name: str
    created: bool


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must hold no credentials, query or fragment: put the key in apiKey")
    return value.rstrip("/")


class LlmDocument(WireModel):
    """One row as `apply` takes it."""

    name: LlmName
    kind: Literal["virtual", "public"] | None = None
    type: str | None = Field(default=None, min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    tier: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=2048)
    # public rows: where the upstream is, its key, how long a call may take
    base_url: str | None = Field(default=None, max_length=2048)
    api_key: SecretRef | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_UPSTREAM_TIMEOUT)
    # Rows that serve a request this one cannot (tried in order; not transitive).
    fallbacks: list[LlmName] | None = Field(default=None, max_length=MAX_FALLBACKS)
    # pool settings (virtual rows; null: the relay's defaults)
    max_queue_depth: int | None = Field(default=None, ge=0, le=1_000_000)
    wake_after_queue_seconds: float | None = Field(default=None, ge=0, le=86_400)
    # The row may serve agents of other keys whose target is its backend model (a pool
    # by model); off, only its own key's agents and admins' agents use it.
    shared_pool: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_lifecycle(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in LIFECYCLE_FIELDS}
        return data

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @field_validator("fallbacks")
    @classmethod
    def _once_each(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each fallback may appear once")
        return value

    @model_validator(mode="after")
    def _not_itself(self) -> LlmDocument:
        if self.fallbacks and self.name in self.fallbacks:
            raise ValueError(f"fallbacks: {self.name!r} cannot be its own fallback")
        return self

    def given(self) -> set[str]:
        """The fields the document sets (null included), by their Python names."""
        return set(self.model_fields_set)


def repeated(names: list[str]) -> list[str]:
    """The names that appear more than once, in any case (names are owned
    case-insensitively), sorted."""
    lowered = [n.lower() for n in names]
    return sorted({n for n in names if lowered.count(n.lower()) > 1})


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def once_each(documents: list[N], what: str) -> list[N]:
    """`documents` if each names a different `what` (ValueError otherwise)."""
    twice = repeated([d.name for d in documents])
    if twice:
        raise ValueError(f"each {what} may appear once; given more than once: {twice}")
    return documents


class LlmApply(WireModel):
    documents: list[LlmDocument] = Field(min_length=1, max_length=MAX_APPLY_DOCUMENTS)

    @field_validator("documents")
    @classmethod
    def _names_once(cls, value: list[LlmDocument]) -> list[LlmDocument]:
        return once_each(value, "row")


class Applied(Answer):
    name: str
    kind: str
    # created | updated | unchanged
    action: str
    # The fields it changed (camelCase).
    changed: list[str] = Field(default_factory=list)


class ApplyResult(Answer):
    data: list[Applied]
