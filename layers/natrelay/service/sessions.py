"""Publisher sessions: register, heartbeat, deregister, and a poll's session."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from natrelay.errors import NameTakenError, SessionNotFoundError
from natrelay.service.context import Context
from natrelay.service.endings import Endings
from natrelay.service.ids import new_session_id
from natrelay.store import ConditionFailedError, LlmRecord, SessionRecord
from natrelay.wire import (
    HeartbeatRequest,
    LlmStatus,
    PollRequest,
    RegisterRequest,
    SessionRequest,
)

log = logging.getLogger("natrelay.service")

# Past this many sessions, the heartbeat cache starts over (it is only a hint).
_BEATS_CAP = 10_000


@dataclass(frozen=True)
class Registration:
    """A session and its rows, as a register, heartbeat or deregister left them."""

    session: SessionRecord
    rows: list[LlmRecord]


def _unknown(session_id: str, why: str = "is unknown") -> SessionNotFoundError:
    return SessionNotFoundError(
        f"publisher session {session_id} {why}; register again", param="providerSessionId"
    )


class Sessions:
    def __init__(self, ctx: Context, endings: Endings) -> None:
        self.stores = ctx.stores
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.endings = endings
        # Session id -> (last heartbeat refresh, generation) as this process saw them:
        # lets a poll skip re-reading its session (a hint: a miss reads DynamoDB).
        self._beats: dict[str, tuple[float, int]] = {}

    def _expires_at(self, now: float) -> float:
        s = self.settings
        return now + s.heartbeat_timeout_seconds + s.inactive_retention_seconds

    def _seen(self, registration: Registration) -> Registration:
        session = registration.session
        if len(self._beats) > _BEATS_CAP:
            self._beats.clear()
        self._beats[session.id] = (session.heartbeat_at, session.generation)
        return registration

    @property
    def refresh_seconds(self) -> float:
        """How often a long-poll refreshes its session's heartbeat."""
        return min(15.0, self.settings.heartbeat_timeout_seconds / 4)

    async def get(self, session_id: str) -> SessionRecord:
        session = await self.stores.sessions.get(session_id)
        if session is None:
            raise _unknown(session_id)
        return session

    async def register(self, req: RegisterRequest) -> Registration:
        session_id = req.provider_session_id or new_session_id()
        now = self.clock()
        try:
            session, rows = await self.stores.sessions.register(
                session_id,
                list(req.providers),
                now,
                self.liveness.cutoff(now),
                self._expires_at(now),
            )
        except ConditionFailedError as exc:
            held = exc.record if isinstance(exc.record, LlmRecord) else None
            name = held.name if held else "?"
            holder = (held.session_id if held else None) or "another session"
            raise NameTakenError(
                f"LLM name {name!r} is live under publisher session {holder}; "
                "stop that publisher or choose another name",
                param="providers.name",
            ) from exc
        log.info("session %s registered %s", session_id, [r.name for r in rows])
        return self._seen(Registration(session, rows))

    async def beat(self, session: SessionRecord, reported: dict[str, LlmStatus]) -> list[LlmRecord]:
        """Refresh every row of the session and the session itself."""
        now = self.clock()
        statuses = {**session.statuses, **{k: v for k, v in reported.items() if k in session.names}}
        rows: list[LlmRecord] = []
        try:
            for name in session.names:
                status = statuses.get(name, LlmStatus.ACTIVE)
                rows.append(await self.stores.llms.beat(name, session.id, status, now))
            await self.stores.sessions.touch(session.id, statuses, now, self._expires_at(now))
        except ConditionFailedError as exc:
            raise SessionNotFoundError(
                f"{exc.message}; register again", param="providerSessionId"
            ) from exc
        return rows

    async def heartbeat(self, req: HeartbeatRequest) -> Registration:
        session = await self.get(req.provider_session_id)
        rows = await self.beat(session, dict(req.statuses))
        return self._seen(Registration(replace(session, heartbeat_at=self.clock()), rows))

    async def polling_session(self, req: PollRequest) -> SessionRecord:
        """The session of a poll, its heartbeat refreshed when due.

        Skips the read when this process refreshed the same generation of the session
        recently; a publisher that says no generation (or another one) is read.
        """
        now = self.clock()
        seen = self._beats.get(req.provider_session_id)
        if (
            req.generation is not None
            and seen is not None
            and seen[1] == req.generation
            and now - seen[0] < self.refresh_seconds
        ):
            return SessionRecord(
                id=req.provider_session_id,
                names=(),
                statuses={},
                heartbeat_at=seen[0],
                generation=req.generation,
            )
        session = await self.get(req.provider_session_id)
        if now - session.heartbeat_at >= self.refresh_seconds:
            await self.beat(session, {})
            session = replace(session, heartbeat_at=now)
        self._seen(Registration(session, []))
        return session

    async def deregister(self, req: SessionRequest) -> Registration:
        session = await self.get(req.provider_session_id)
        now = self.clock()
        rows: list[LlmRecord] = []
        for name in session.names:
            try:
                rows.append(await self.stores.llms.retire(name, session.id, now))
            except ConditionFailedError:
                continue
        await self.stores.sessions.delete(session.id)
        await self.endings.fail_queued(session.id, "its publisher shut down")
        log.info("session %s deregistered", session.id)
        self._beats.pop(session.id, None)
        return Registration(session, rows)

    async def record_status(self, session_id: str, name: str, status: LlmStatus) -> None:
        """Keep a status the relay established (a finished wake) on the session."""
        try:
            await self.stores.sessions.record_status(session_id, name, status)
        except ConditionFailedError:
            log.info("session %s is gone: status of %s not recorded", session_id, name)
