"""Store records as the wire models clients and publishers see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from natrelay.store import LlmRecord, TaskRecord
from natrelay.wire import ErrorInfo, LlmRow, TaskView


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def _error_fields(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k in ("message", "type", "code", "param")}


def row_view(row: LlmRecord, now: float) -> LlmRow:
    return LlmRow(
        name=row.name,
        kind=row.kind,
        type=row.type,
        model=row.model,
        tier=row.tier,
        description=row.description,
        status=row.status,
        provider_session_id=row.session_id,
        last_heartbeat_at=iso(row.last_heartbeat_at),
        inactive_since=iso(row.inactive_since),
        created_at=iso(row.created_at),
        waking=row.waking(now),
    )


def task_view(task: TaskRecord, result: bytes | None = None) -> TaskView:
    error = ErrorInfo.model_validate(_error_fields(task.error)) if task.error else None
    return TaskView(
        id=task.id,
        kind=task.kind,
        llm=task.llm,
        state=task.state,
        created_at=iso(task.created_at) or "",
        updated_at=iso(task.updated_at),
        stream=task.stream,
        chunk_count=task.chunk_count,
        status=task.status,
        result=json.loads(result) if result else None,
        error=error,
    )
