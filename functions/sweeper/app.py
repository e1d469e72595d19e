"""EventBridge schedule -> one sweep (not through Mangum: this is not an HTTP event)."""

from __future__ import annotations

import asyncio
from typing import Any

from natrelay.service import RelayService

# Built once per cold start and reused by warm invocations, like Mangum does.
_service = RelayService.from_settings()
_loop = asyncio.new_event_loop()


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return _loop.run_until_complete(_service.sweep())
