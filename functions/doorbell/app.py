"""API Gateway WebSocket API ($connect, $disconnect) -> the doorbell.

Not through Mangum, which handles HTTP events only: `GatewayEvents` dispatches these.
"""

from __future__ import annotations

from typing import Any

from natrelay.web.doorbell import GatewayEvents

# Built once per cold start and reused by warm invocations, like Mangum does.
_events = GatewayEvents()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _events(event)
