"""Publisher sessions: register, heartbeat, deregister, and a poll's session."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from natrelay.errors import (
    NameLimitError,
    NameOwnedError,
    NameTakenError,
    SessionForbiddenError,
    SessionNotFoundError,
)
from natrelay.service.access import STATIC_IDS, Principal
from natrelay.service.agents import record_of
from natrelay.service.context import Context
from natrelay.service.endings import Endings
from natrelay.service.ids import new_session_id
from natrelay.service.local_polls import LocalPolls
from natrelay.service.pools import Pools
from natrelay.store import (
    AgentWrite,
    ConditionFailedError,
    LlmRecord,
    NameHeldError,
    SessionRecord,
)
from natrelay.store.records import AGENT_OWNER, PUBLIC_OWNER
from natrelay.store.sessions import NamesFullError
from natrelay.wire import (
    MAX_RUNNING_TASKS,
    HeartbeatRequest,
    LlmStatus,
    PollRequest,
    RegisterRequest,
    Role,
    SessionRequest,
    fingerprint,
)

log = logging.getLogger("natrelay.service")

# Past this many sessions, the heartbeat cache starts over (it is only a hint).
_BEATS_CAP = 10_000


@dataclass(frozen=True)
class Registration:
    """A session and its rows, as a register, heartbeat or deregister left them."""

    session: SessionRecord
    rows: list[LlmRecord]
    # Tasks of the session the relay marked cancelled, taken by this heartbeat's write.
    cancelled: tuple[str, ...] = ()


def _forbidden() -> SessionForbiddenError:
    # The same answer whether the session is another key's or does not exist at all.
    return SessionForbiddenError(
        "this publisher key holds no such session; register again",
        param="providerSessionId",
    )


def _too_many(cap: int, owned: int) -> NameLimitError:
    return NameLimitError(
        f"this publisher key may own {cap} names and owns {owned}; an admin can release "
        "one it no longer publishes (natrelay llm delete NAME)",
        param="providers",
    )


def _held(exc: NameHeldError, principal: Principal) -> NameOwnedError | NameTakenError:
    row = exc.record if isinstance(exc.record, LlmRecord) else None
    owner = exc.owner or (row.owner if row else None)
    if owner in (PUBLIC_OWNER, AGENT_OWNER):
        what = "a public row" if owner == PUBLIC_OWNER else "an agent"
        return NameOwnedError(
            f"the name {exc.name!r} is {what} an admin manages; choose another name",
            param="providers.name",
        )
    if owner is not None and owner != principal.key_id:
        who = (
            "the shared publish token (NATRELAY_PUBLISH_TOKEN), which published it before"
            if owner == STATIC_IDS[Role.PUBLISHER]
            else "another publisher key"
        )
        return NameOwnedError(
            f"the name {exc.name!r} belongs to {who}; choose another name, or have an admin "
            f"release it: `natrelay llm delete {exc.name}` (or DELETE /api/v1/llms/"
            f"{exc.name}) deletes its row and frees the name for this key",
            param="providers.name",
        )
    return NameTakenError(
        f"LLM name {exc.name!r} is live under another session of this key; stop that "
        "publisher or choose another name",
        param="providers.name",
    )


class Sessions:
    def __init__(self, ctx: Context, endings: Endings, pools: Pools, polls: LocalPolls) -> None:
        self.pools = pools
        self.polls = polls
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.endings = endings
        # Session id -> the session as this process last saw it (its heartbeat refresh,
        # generation, owner, names): lets a poll skip re-reading its session, and beat
        # quietly (a hint: a miss, or a belief the write finds stale, reads DynamoDB).
        self._beats: dict[str, SessionRecord] = {}

    def _expires_at(self, now: float) -> float:
        s = self.settings
        return now + s.heartbeat_timeout_seconds + s.inactive_retention_seconds

    def _seen(self, registration: Registration) -> Registration:
        session = registration.session
        if len(self._beats) > _BEATS_CAP:
            self._beats.clear()
        self._beats[session.id] = session
        return registration

    @property
    def refresh_seconds(self) -> float:
        """How often a long-poll refreshes its session's heartbeat."""
        return min(15.0, self.settings.heartbeat_timeout_seconds / 4)

    async def get(self, principal: Principal, session_id: str) -> SessionRecord:
        """The caller's session; SessionForbiddenError if it is not theirs (or none)."""
        session = await self.stores.sessions.get(session_id)
        if session is None or session.owner != principal.key_id:
            raise _forbidden()
        return session

    async def register(self, principal: Principal, req: RegisterRequest) -> Registration:
        """Register the providers for the caller's key. A session id another key holds
        is not an error: the caller gets a new session, and learns nothing."""
        session_id = req.provider_session_id or new_session_id()
        before = await self.stores.sessions.get(session_id) if req.provider_session_id else None
        # a key owns at most so many names (any case): how many of these are new to it
        cap = self.settings.max_names_per_key
        owned = await self.stores.keys.owned(principal.key_id)
        names = {p.name.lower() for p in req.providers}
        names |= {a.lower() for p in req.providers for a in p.aliases}
        names |= {a.name.lower() for a in req.agents}
        agents = tuple(AgentWrite(a.name, record_of(a), a.description) for a in req.agents)
        new = len(names - owned)
        if len(owned) + new > cap:
            raise _too_many(cap, len(owned))
        for attempt in range(2):
            now = self.clock()
            try:
                session, rows = await self.stores.sessions.register(
                    session_id,
                    principal.key_id,
                    list(req.providers),
                    now=now,
                    expires_at=self._expires_at(now),
                    new_names=new,
                    max_names=cap,
                    work_beats=req.work_beats,
                    agents=agents,
                )
                break
            except NameHeldError as exc:
                raise _held(exc, principal) from exc
            except NamesFullError as exc:  # another registration of the key added some
                raise _too_many(cap, len(owned)) from exc
            except ConditionFailedError:
                if attempt:
                    raise
                session_id, before = new_session_id(), None
        if before is not None and before.owner == principal.key_id:
            await self._retire(session, set(before.beaten) - set(session.beaten))
        log.info(
            "session %s of key %s registered %s",
            fingerprint(session_id),
            principal.key_id,
            [r.name for r in rows] + [f"agent {a}" for a in session.agents],
        )
        return self._seen(Registration(session, rows))

    async def _retire(self, session: SessionRecord, names: set[str]) -> None:
        """Leave the pools a re-registration no longer publishes (left a member, the
        session would go stale there without a heartbeat)."""
        if names:
            await self.pools.leave(session, names, "its publisher no longer serves it")

    async def beat(
        self,
        session: SessionRecord,
        reported: dict[str, LlmStatus],
        running: list[str] | None = None,
        *,
        take_cancelled: bool = False,
    ) -> tuple[list[LlmRecord], list[str]]:
        """Refresh every row of the session and the session itself; with
        `take_cancelled`, also take the tasks marked cancelled (in the session's write).

        Only statuses the publisher reports now are written: what the caller read of the
        session may be older than a status the relay set since (a finished wake).
        """
        now = self.clock()
        reported = {k: v for k, v in reported.items() if k in session.names}
        if running is not None and len(running) > MAX_RUNNING_TASKS:
            running = None  # too many to keep on the session: its leases stay as they were
        rows: list[LlmRecord] = []
        try:
            for name in session.beaten:
                rows.append(
                    await self.stores.llms.beat(name, session.id, now, status=reported.get(name))
                )
            taken = await self.stores.sessions.touch(
                session.id,
                reported,
                now,
                self._expires_at(now),
                running,
                take_cancelled=take_cancelled,
            )
        except ConditionFailedError as exc:
            raise SessionNotFoundError(
                "a row of this session was taken over, or the session ended; register again",
                param="providerSessionId",
            ) from exc
        await self.pools.prune(rows)
        return rows, taken

    async def heartbeat(self, principal: Principal, req: HeartbeatRequest) -> Registration:
        session = await self.get(principal, req.provider_session_id)
        rows, taken = await self.beat(session, dict(req.statuses), req.running, take_cancelled=True)
        seen = Registration(replace(session, heartbeat_at=self.clock()), rows, tuple(taken))
        return self._seen(seen)

    async def work_beat(self, principal: Principal, req: HeartbeatRequest) -> list[str]:
        """A work beat: the session lives and runs `running`, in one write and no read
        (its rows are the slow beat's to refresh); returns the tasks the relay marked
        cancelled since, taken by the same write."""
        now = self.clock()
        running = (req.running or [])[:MAX_RUNNING_TASKS]
        try:
            return await self.stores.sessions.work_beat(
                req.provider_session_id, principal.key_id, now, self._expires_at(now), running
            )
        except ConditionFailedError as exc:
            raise _forbidden() from exc

    async def polling_session(self, principal: Principal, req: PollRequest) -> SessionRecord:
        """The session of a poll, its heartbeat refreshed when due.

        Skips the read when this process refreshed the same generation of the session
        recently; a publisher that says no generation (or another one) is read.
        """
        now = self.clock()
        seen = self._beats.get(req.provider_session_id)
        if (
            req.generation is not None
            and seen is not None
            and seen.generation == req.generation
            and seen.owner == principal.key_id
        ):
            if now - seen.heartbeat_at < self.refresh_seconds:
                return seen
            if await self._beat_quietly(seen, now, req.running):
                return self._seen(Registration(replace(seen, heartbeat_at=now), [])).session
        session = await self.get(principal, req.provider_session_id)
        if now - session.heartbeat_at >= self.refresh_seconds:
            await self.beat(session, {}, req.running)  # (a poll leaves the marks be)
            session = replace(session, heartbeat_at=now)
        self._seen(Registration(session, []))
        return session

    async def _beat_quietly(
        self, session: SessionRecord, now: float, running: list[str] | None
    ) -> bool:
        """Refresh the heartbeat as this process believes the session is, in one write
        and no read; False if the belief is stale (then the long way, which knows)."""
        try:
            await self.stores.beats.beat_quietly(
                session.id,
                owner=session.owner or "",
                generation=session.generation,
                names=session.beaten,
                now=now,
                expires_at=self._expires_at(now),
                running=running if running is None or len(running) <= MAX_RUNNING_TASKS else None,
            )
        except ConditionFailedError:
            return False
        return True

    async def deregister(self, principal: Principal, req: SessionRequest) -> Registration:
        session = await self.get(principal, req.provider_session_id)
        rows = await self.pools.leave(session, session.beaten, "its publisher shut down")
        await self.stores.sessions.delete(session.id)
        # what it holds goes back to its pools: what this process holds for it, and what
        # it last said it runs
        self.polls.forget(session.id)
        for task in await self.tasks.held_by(session.id):
            await self.endings.hand_back(task)
        await self.pools.hand_back(session)
        log.info("session %s deregistered", fingerprint(session.id))
        self._beats.pop(session.id, None)
        return Registration(session, rows)

    async def record_status(self, session_id: str, name: str, status: LlmStatus) -> None:
        """Keep a status the relay established (a finished wake) on the session."""
        try:
            await self.stores.sessions.record_status(session_id, name, status)
        except ConditionFailedError:
            log.info("session %s is gone: status of %s not recorded", fingerprint(session_id), name)
