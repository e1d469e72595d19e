"""Types shared across the publisher and its plugins (a leaf: it imports no module of
the publisher, so plugins can depend on it and the config on them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from pydantic import SecretStr

JSONObject = dict[str, Any]
Chunk = dict[str, Any]
Action = Literal["wake", "sleep"]
Heartbeat = Callable[[], Awaitable[None]]


class ProviderSettings(Protocol):
    """What a plugin reads of its provider's entry in the config file (`providers[]`):
    `natrelay_publisher.ProviderConfig` has these fields, validated."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def base_url(self) -> str | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def api_key(self) -> SecretStr | None: ...

    @property
    def timeout_seconds(self) -> float: ...

    @property
    def options(self) -> dict[str, Any]: ...
