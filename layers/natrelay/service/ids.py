"""Identifiers the relay hands out."""

from __future__ import annotations

import secrets


def new_task_id(now: float) -> str:
    """Sortable by creation time, unguessable."""
    return f"{int(now * 1000):012x}{secrets.token_hex(8)}"


def new_session_id() -> str:
    return secrets.token_urlsafe(24)
