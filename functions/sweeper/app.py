"""EventBridge schedule -> one sweep (not through Mangum: this is not an HTTP event)."""

from __future__ import annotations

import asyncio
from typing import Any

from natrelay.service import RelayService

_service = RelayService.from_settings()


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return asyncio.run(_service.sweep())
