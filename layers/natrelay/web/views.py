"""Domain records as the wire models clients and publishers see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from natrelay.service import Registration
from natrelay.service.agent_bodies import AGENT_ENDPOINTS
from natrelay.service.catalog import Pool
from natrelay.service.payloads import loads_stored, public_model
from natrelay.settings import Settings
from natrelay.store import AgentRecord, KeyRecord, LlmRecord, TaskRecord, UsageRecord
from natrelay.wire import (
    AgentCard,
    AgentView,
    Endpoint,
    ErrorInfo,
    KeyCreated,
    KeyView,
    LlmRow,
    LlmStatus,
    MemberView,
    ModelCard,
    ModelTarget,
    PolledTask,
    QueueClassView,
    SecretRef,
    SessionResponse,
    TaskView,
    UsageDay,
    UsageView,
    fingerprint,
)


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def _error_fields(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k in ("message", "type", "code", "param")}


def endpoint_list(endpoints: frozenset[str] | None) -> list[str] | None:
    """Endpoints in a stable order (`Endpoint`'s); None for none."""
    return [e.value for e in Endpoint if e.value in endpoints] if endpoints else None


def row_view(
    row: LlmRecord,
    now: float,
    status: LlmStatus | None = None,
    endpoints: frozenset[str] | None = None,
    *,
    admin: bool = False,
    served: bool = False,
) -> LlmRow:
    """A row as callers see it; with `admin`, also what admins set on it (never an API
    key: only where it is kept). Its backend's model id only for admins and (`served`)
    the publisher that serves it."""
    view = LlmRow(
        name=row.name,
        kind=row.kind,
        type=row.type,
        model=row.model if admin or served else None,
        tier=row.tier,
        description=row.description,
        status=status or row.status,
        last_heartbeat_at=iso(row.last_heartbeat_at),
        inactive_since=iso(row.inactive_since),
        created_at=iso(row.created_at),
        waking=row.waking(now),
        endpoints=endpoint_list(endpoints),
        aliases=list(row.aliases) or None,
    )
    if not admin:
        return view
    return view.model_copy(
        update={
            "fallbacks": list(row.fallbacks) or None,
            "max_queue_depth": row.max_queue_depth,
            "wake_after_queue_seconds": row.wake_after_queue_seconds,
            "shared_pool": row.shared_pool or None,
            "base_url": row.base_url,
            "api_key": SecretRef.model_validate(row.api_key_ref) if row.api_key_ref else None,
            "timeout_seconds": row.timeout_seconds,
        }
    )


def task_view(
    task: TaskRecord, result: bytes | None = None, queue_position: int | None = None
) -> TaskView:
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
        result=public_model(loads_stored(result), task.shown) if result else None,
        error=error,
        priority=task.priority,
        queue_position=queue_position,
    )


def session_response(
    registration: Registration, now: float, settings: Settings | None = None
) -> SessionResponse:
    """What the publisher hears of its session: each row with its own member's status;
    with `settings`, what the relay offers it (its doorbell, its heartbeat timeout) and
    each row's live members (its pool: sessions of the same key, by fingerprint)."""
    session = registration.session
    rows = []
    for row in registration.rows:
        member = row.members.get(session.id)
        view = row_view(row, now, member.status if member else None, served=True)
        if settings is not None:
            live = row.live_members(now, settings.heartbeat_timeout_seconds)
            members = [MemberView(member=fingerprint(m.session_id), status=m.status) for m in live]
            view = view.model_copy(update={"members": members})
        rows.append(view)
    return SessionResponse(
        provider_session_id=session.id,
        llms=rows,
        generation=session.generation,
        doorbell_url=settings.doorbell_url if settings else None,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds if settings else None,
        work_beat_seconds=settings.work_beat_seconds if settings else None,
        work_window_seconds=settings.work_window_seconds if settings else None,
    )


def pool_view(pool: Pool, now: float, *, admin: bool = False) -> LlmRow:
    """A row with its pool: members (by fingerprint), their load, and the queue."""
    members = [
        MemberView(
            member=fingerprint(member.session_id),
            status=member.status,
            last_heartbeat_at=iso(member.heartbeat_at),
            max_concurrency=member.max_concurrency,
            in_flight=running or 0,
            free_slots=(
                max(0, member.max_concurrency - running)
                if member.max_concurrency is not None and running is not None
                else None
            ),
            seconds_per_task=round(speed.seconds, 3) if speed else None,
            measured_tasks=speed.tasks if speed else None,
        )
        for member, running, speed in pool.members
    ]
    live = [member.endpoints for member, _, _ in pool.members]
    endpoints = frozenset.intersection(*live) if live else None
    return row_view(pool.row, now, pool.status, endpoints, admin=admin).model_copy(
        update={
            "members": members,
            "queue_depth": pool.queue_depth,
            "oldest_queued_seconds": (
                round(pool.oldest_queued_seconds, 1)
                if pool.oldest_queued_seconds is not None
                else None
            ),
            "queue_classes": [
                QueueClassView(
                    priority=priority,
                    depth=waiting.depth,
                    oldest_queued_seconds=(
                        round(waiting.oldest_seconds, 1)
                        if waiting.oldest_seconds is not None
                        else None
                    ),
                )
                for priority, waiting in pool.classes.items()
            ],
            "affinity_hits": pool.affinity.hits,
            "affinity_misses": pool.affinity.misses,
        }
    )


def polled_task(task: TaskRecord) -> PolledTask:
    """A claimed task as the poll hands it out; its request inline if the task carries it."""
    return PolledTask(
        id=task.id,
        kind=task.kind,
        llm=task.llm,
        created_at=iso(task.created_at) or "",
        stream=task.stream,
        request=json.loads(task.request) if task.request else None,
        request_size=task.request_size,
        wake_id=task.wake_id,
        lease_seconds=task.lease_seconds,
        endpoint=task.endpoint,
        traceparent=task.traceparent,
    )


def model_card(
    row: LlmRecord, status: LlmStatus, endpoints: frozenset[str] | None = None
) -> ModelCard:
    """A row as an OpenAI model object (with its pool's status, the APIs it serves and
    its aliases)."""
    return ModelCard(
        id=row.name,
        created=int(row.created_at or 0),
        status=status,
        tier=row.tier,
        description=row.description,
        endpoints=endpoint_list(endpoints),
        aliases=list(row.aliases) or None,
    )


def agent_target(spec: AgentRecord) -> str | ModelTarget:
    if spec.target is not None:
        return spec.target
    return ModelTarget(model=spec.target_model or "")


def agent_view(row: LlmRecord, status: LlmStatus) -> AgentView:
    """An agent as admins see it (and as `natrelay agent get` writes it back)."""
    spec = row.agent
    assert spec is not None
    return AgentView(
        name=row.name,
        target=agent_target(spec),
        system_prompt=spec.system_prompt,
        defaults=spec.defaults or None,
        description=row.description,
        origin="published" if spec.published else "admin",
        status=status,
        owner=row.owner,
        created_at=iso(row.created_at),
        last_heartbeat_at=iso(row.last_heartbeat_at) if spec.published else None,
        inactive_since=iso(row.inactive_since) if spec.published else None,
    )


def agent_card(row: LlmRecord, status: LlmStatus, *, admin: bool) -> ModelCard:
    """An agent as an OpenAI model object: owned by its origin (an admin, or a
    publisher), its target shown to admins only."""
    spec = row.agent
    assert spec is not None
    return ModelCard(
        id=row.name,
        created=int(row.created_at or 0),
        owned_by="publisher" if spec.published else "admin",
        status=status,
        description=row.description,
        endpoints=endpoint_list(frozenset(e.value for e in AGENT_ENDPOINTS)),
        natrelay=AgentCard(target=agent_target(spec) if admin else None),
    )


def key_view(key: KeyRecord, now: float) -> KeyView:
    status = "revoked" if key.revoked_at else ("active" if key.valid(now) else "expired")
    return KeyView(
        id=key.id,
        label=key.label,
        role=key.role,
        models=list(key.models) if key.models is not None else None,
        rpm=key.rpm,
        concurrency=key.concurrency,
        tokens_per_day=key.tokens_per_day,
        priority=key.priority,
        created_at=iso(key.created_at) or "",
        expires_at=iso(key.expires_at),
        revoked_at=iso(key.revoked_at),
        status=status,
    )


def key_created(key: KeyRecord, secret: str, now: float) -> KeyCreated:
    return KeyCreated(**key_view(key, now).model_dump(), secret=secret)


def usage_view(key_id: str, days: list[UsageRecord]) -> UsageView:
    return UsageView(
        key_id=key_id,
        days=[
            UsageDay(
                date=d.day,
                requests=d.requests,
                prompt_tokens=d.prompt_tokens,
                completion_tokens=d.completion_tokens,
                errors=d.errors,
                refused=d.refused,
            )
            for d in days
        ],
    )
