"""The doorbell: a publisher's WebSocket that rings when work is queued for it.

An optimisation of dispatch only, like the in-process wake-ups: a ring carries no work,
just "poll now", and a lost ring is caught by the publisher's next poll. A publisher
holding a doorbell polls on a ring, on (re)connect and every `safetyPollSeconds`.

On AWS the connections live in an API Gateway WebSocket API (`$connect` binds one to its
session, `$disconnect` unbinds it) and rings go out through its management API; where
the relay serves the WebSocket itself (natrelay dev) they go to `LocalBells`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from natrelay.service.context import Context
from natrelay.service.endings import PoolHint
from natrelay.store import Delivery, LlmRecord, MemberRecord, SessionRecord
from natrelay.wakeups import pool_topic
from natrelay.wire import DoorbellMessage, LlmStatus, fingerprint

log = logging.getLogger("natrelay.doorbell")

# A binding outlives the connection it names by this much at most (API Gateway: 2 h).
_BINDING_MARGIN_SECONDS = 3600.0


class Bells(Protocol):
    """Where rings go: the connections of a WebSocket API, or of this process."""

    async def send(self, connection_id: str, data: bytes) -> Delivery: ...


class LocalBells:
    """The doorbell connections this process holds itself (server mode)."""

    def __init__(self) -> None:
        self._senders: dict[str, Callable[[bytes], Awaitable[None]]] = {}

    def add(self, connection_id: str, send: Callable[[bytes], Awaitable[None]]) -> None:
        self._senders[connection_id] = send

    def discard(self, connection_id: str) -> None:
        self._senders.pop(connection_id, None)

    def __len__(self) -> int:
        return len(self._senders)

    async def send(self, connection_id: str, data: bytes) -> Delivery:
        send = self._senders.get(connection_id)
        if send is None:
            # Perhaps another process's (several workers): not ours to call gone.
            return Delivery.FAILED
        try:
            await send(data)
        except Exception:  # closing under us: its disconnect unbinds it
            return Delivery.FAILED
        return Delivery.DELIVERED


def ring_message(task_id: str) -> bytes:
    return (
        DoorbellMessage(type="ring", task_id=task_id)
        .model_dump_json(by_alias=True, exclude_none=True)
        .encode()
    )


class Doorbell:
    def __init__(self, ctx: Context, bells: Bells) -> None:
        self.doorbells = ctx.stores.doorbells
        self.liveness = ctx.liveness
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.wakeups = ctx.wakeups
        self.bells = bells

    async def connect(self, session: SessionRecord, connection_id: str) -> None:
        """Ring `connection_id` for this session (already checked to be the caller's)."""
        expires_at = (
            self.clock() + self.settings.doorbell_max_connection_seconds + _BINDING_MARGIN_SECONDS
        )
        bound = await self.doorbells.bind(
            connection_id, session.id, session.owner or "", session.names, expires_at
        )
        log.info(
            "doorbell of session %s connected for %d of %d rows",
            fingerprint(session.id),
            len(bound),
            len(session.names),
        )

    async def disconnect(self, connection_id: str) -> None:
        await self.doorbells.unbind(connection_id)

    async def queued(self, hint: PoolHint, row: LlmRecord | None = None) -> None:
        """A task was queued for a pool: tell the members that may take it. The one home
        of that rule.

        In this process: one waiting poll of the pool for a task any member may take
        (idle members take turns, one claim attempt), every poll for one meant for a
        member. Doorbells (read from `row`, which submit has anyway): the member a task
        is meant for, else every live member that serves. Never raises: a ring that fails
        is the safety poll's to make up for.
        """
        topic = pool_topic(hint.llm)
        target = hint.target_session or hint.wake_target
        if target is None:
            self.wakeups.notify_one(topic, hint)
        else:
            self.wakeups.notify(topic, hint)
        if row is None:
            return
        live = row.live_members(self.clock(), self.liveness.timeout)
        if target is not None:
            members = [m for m in live if m.session_id == target]
        else:
            members = [m for m in live if m.status is LlmStatus.ACTIVE]
        for member in members:
            if member.doorbell is not None:
                await self._ring(member, hint, row.name)

    async def _ring(self, member: MemberRecord, hint: PoolHint, name: str) -> None:
        assert member.doorbell is not None
        try:
            delivery = await self.bells.send(member.doorbell, ring_message(hint.task_id))
            if delivery is Delivery.GONE:
                await self.doorbells.unbind(
                    member.doorbell, rows=(name,), session_id=member.session_id
                )
                log.info("doorbell of session %s is gone: unbound", fingerprint(member.session_id))
            elif delivery is Delivery.FAILED:
                log.debug("ring of task %s not delivered", hint.task_id)
        except Exception:
            log.warning("ring of task %s failed", hint.task_id, exc_info=True)
