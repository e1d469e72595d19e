"""EventBridge schedule -> one sweep (not through Mangum: this is not an HTTP event)."""

from __future__ import annotations

from typing import Any

from natrelay.service.assembly import SweepRunner

# Built once per cold start and reused by warm invocations, like Mangum does.
_sweep = SweepRunner()


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return _sweep()
