"""The wake-recipe plugin contract: a config model plus a class that runs it."""

from __future__ import annotations

import logging
from typing import ClassVar, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.types import Action, ProviderSettings

DEFAULT_MAX_WAIT_SECONDS = 120.0


class RecipeConfig(BaseModel):
    """Base of every recipe's config (camelCase keys, unknown keys refused)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: str
    max_wait_seconds: float = Field(default=DEFAULT_MAX_WAIT_SECONDS, gt=0, le=3600)

    def for_provider(self, provider: ProviderSettings) -> Self:
        """Fill defaults that depend on the provider; raise ValidationError when impossible."""
        return self


class WakeRecipe(Protocol):
    """Wakes (or puts to sleep) one provider's backend.

    `run` raises RecipeError with the cause; `ready` answers True/False when the
    recipe has its own readiness check, None to fall back to the provider's availability.
    """

    type_name: ClassVar[str]
    Config: ClassVar[type[RecipeConfig]]
    can_sleep: ClassVar[bool]

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None: ...

    @property
    def max_wait_seconds(self) -> float: ...

    async def run(self, action: Action) -> None: ...

    async def ready(self) -> bool | None: ...


def tail(text: str | bytes, limit: int = 300) -> str:
    """The last `limit` characters of a command's output or an HTTP body, on one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


def refused(what: str, status: int, body: str) -> RecipeError:
    """The error for a recipe's HTTP call that answered `status`, not 2xx. Its `body` may
    hold anything (an internal URL, a password): it is logged at DEBUG on this machine,
    and never goes to the relay, whose clients read the error."""
    logging.getLogger("natrelay.publisher").debug("%s answered %d: %s", what, status, tail(body))
    return RecipeError(f"{what} answered {status} (its body is in the publisher's debug log)")


C = TypeVar("C", bound=RecipeConfig)


def expect(config: RecipeConfig, kind: type[C]) -> C:
    """The recipe's own config class (the registry validated it into that class)."""
    if not isinstance(config, kind):
        raise RecipeError(f"expected a {kind.__name__}, got {type(config).__name__}")
    return config
