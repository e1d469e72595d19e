"""Queue order and the choice of member: priority classes with aging, and which tasks
a member leaves to others (affinity: service.affinity; speed: service.speeds).

A pool's queue is one index sorted by `queueOrder` (store.queues), so a poll reads it in
one Query whatever the classes. The order encodes the class: an interactive request
queued at t sorts at t, a batch one at t + `batch_aging_seconds`. Interactive work thus
goes first, and batch work that has waited the aging time goes before anything queued
after it: it is never starved. A request's class is its key's (`natrelay keys create
--priority batch`), lowered (never raised) by the X-Natrelay-Priority header.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from natrelay.errors import InvalidRequestError
from natrelay.service.access import Principal
from natrelay.service.endings import PoolHint
from natrelay.service.speeds import Speeds
from natrelay.store import Queued
from natrelay.wire import CONVERSATION_HEADER, PRIORITY_HEADER, Priority, TaskKind

# The longest conversation name a request may send (X-Natrelay-Session).
MAX_CONVERSATION_NAME = 255


def routed(principal: Principal, priority: str | None, conversation: str | None) -> Principal:
    """The caller with what its request's headers ask of the queue: a class (its key's
    when it asks none; InvalidRequestError for an unknown class or one above the key's)
    and the conversation it continues (printable ASCII, 1 to 255 characters)."""
    if conversation is not None:
        if not (
            0 < len(conversation) <= MAX_CONVERSATION_NAME
            and conversation.isascii()
            and conversation.isprintable()
        ):
            raise InvalidRequestError(
                f"{CONVERSATION_HEADER} must be 1 to {MAX_CONVERSATION_NAME} printable ASCII "
                "characters",
                param=CONVERSATION_HEADER,
            )
        principal = replace(principal, conversation=conversation)
    return _with_priority(principal, priority)


def _with_priority(principal: Principal, asked: str | None) -> Principal:
    if asked is None:
        return principal
    try:
        priority = Priority(asked.strip().lower())
    except ValueError:
        known = ", ".join(p.value for p in Priority)
        raise InvalidRequestError(
            f"{asked!r} is not a priority class; use one of: {known}", param=PRIORITY_HEADER
        ) from None
    if priority.rank < principal.priority.rank:
        raise InvalidRequestError(
            f"this key's requests are {principal.priority.value}; a request may lower its "
            f"class, never raise it",
            param=PRIORITY_HEADER,
        )
    return replace(principal, priority=priority)


def queue_order(priority: Priority, created_at: float, aging_seconds: float) -> float:
    """Where a request of this class, created then, sorts in its pool's queue."""
    return created_at + aging_seconds * priority.rank


def in_queue_order(listed: list[PoolHint], told: Iterable[PoolHint]) -> list[PoolHint]:
    """The entries a poll tries, in the order it tries them: what the queue's index
    lists (in its order) and the tasks the poll was told of that it does not list yet
    (the index lags the table) merged in by their order; a task told of without one (a
    requeue, a hand-back, a wake) first, as the index sorts those."""
    seen = {entry.task_id for entry in listed}
    extra = [hint for hint in told if hint.task_id not in seen]
    if not extra:
        return listed
    return sorted([*listed, *extra], key=lambda e: -math.inf if e.order is None else e.order)


@dataclass(frozen=True)
class ClassQueue:
    """The requests of one class waiting in a pool's queue, and the longest wait."""

    depth: int
    oldest_seconds: float | None


def by_class(entries: Iterable[Queued], now: float) -> dict[Priority, ClassQueue]:
    """The requests (not wakes) of a queue's entries, by class, highest class first."""
    waits: dict[Priority, list[float]] = {p: [] for p in Priority}
    for entry in entries:
        if entry.kind is TaskKind.INFER:
            waits[entry.priority].append(max(0.0, now - entry.queued_at))
    return {p: ClassQueue(len(w), max(w) if w else None) for p, w in waits.items()}


def leaves_to_others(session_id: str, entry: PoolHint, now: float, speeds: Speeds) -> bool:
    """Whether a member leaves a queued task to others for now: the member that ran its
    conversation takes it for a moment yet, or a faster member should (this one is much
    slower: it takes the task once the task has waited its handicap)."""
    if entry.prefer == session_id:
        return False
    if entry.prefer is not None and (entry.prefer_until or 0) > now:
        return True
    waited = now - (entry.queued_at if entry.queued_at is not None else now)
    return waited < speeds.handicap(entry.llm, session_id)
