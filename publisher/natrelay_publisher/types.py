"""Type aliases shared across the publisher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

JSONObject = dict[str, Any]
Chunk = dict[str, Any]
Action = Literal["wake", "sleep"]
Heartbeat = Callable[[], Awaitable[None]]
