"""The LLM rows as clients see them: which exist, which can answer now."""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.errors import LlmNotFoundError
from natrelay.service.access import Principal
from natrelay.service.affinity import Affinity, AffinityCounts
from natrelay.service.context import Context
from natrelay.service.dispatch import ClassQueue, by_class
from natrelay.service.speeds import Speed, Speeds
from natrelay.service.suggest import unknown_model
from natrelay.store import LlmRecord, MemberRecord, SessionRecord
from natrelay.wire import MAX_FALLBACKS, LlmStatus, Priority

# GET of a pool counts its queue up to this many.
POOL_QUEUE_COUNT = 1000


@dataclass(frozen=True)
class Pool:
    """A row with its pool as clients see it."""

    row: LlmRecord
    status: LlmStatus
    # Live members, each with how many tasks it says it runs (None: it does not say) and
    # its measured speed (None: not measured lately).
    members: list[tuple[MemberRecord, int | None, Speed | None]]
    queue_depth: int
    oldest_queued_seconds: float | None
    # The requests waiting, by class.
    classes: dict[Priority, ClassQueue]
    # What affinity did for the pool (in this process).
    affinity: AffinityCounts


def _not_found(name: str) -> LlmNotFoundError:
    return LlmNotFoundError(f"the model {name!r} does not exist", param="model")


class Catalog:
    def __init__(self, ctx: Context, affinity: Affinity, speeds: Speeds) -> None:
        self.affinity = affinity
        self.speeds = speeds
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.llms = ctx.stores.llms
        self.keys = ctx.stores.keys
        self.liveness = ctx.liveness
        self.clock = ctx.clock

    async def all(self, principal: Principal) -> list[LlmRecord]:
        """Every row the caller may use (agents are service.agents')."""
        return [r for r in await self.llms.all() if r.agent is None and principal.may_use(r.name)]

    async def serving_rows(self, principal: Principal) -> list[LlmRecord]:
        """Rows the caller may use that can answer now: active, or hibernating and
        wakeable, with a live publisher — or whose fallback (one the caller may use) can
        answer for them."""
        rows = await self.all(principal)
        serving = {r.name for r in rows if self.serving(r)}
        return [
            r
            for r in rows
            if r.name in serving or any(f in serving for f in r.fallbacks[:MAX_FALLBACKS])
        ]

    async def get(self, principal: Principal, name: str, *, hint: bool = True) -> LlmRecord:
        """The row named `name`, or the row whose alias it is (a row's own name wins);
        a model outside the caller's scope is answered as an unknown one (for an alias,
        the scope must allow the row's own name). With `hint`, the error of an unknown
        one names what the caller may have meant, among the rows it may use."""
        row = await self.llms.get(name) if principal.may_use(name) else None
        if row is None:
            row = await self._aliased(name)
        if row is None or not principal.may_use(row.name):
            if not hint:
                raise _not_found(name)
            # the names it may use: its rows and agents (an agent is a model name too)
            usable = [r for r in await self.llms.all() if principal.may_use(r.name)]
            message = unknown_model(name, usable)
            raise LlmNotFoundError(message, param="model")
        return row

    async def _aliased(self, name: str) -> LlmRecord | None:
        """The row `name` is an alias of: claimed as one by the row's owner, and still
        among the aliases the row's last registration declared."""
        target = await self.keys.alias_of(name)
        row = await self.llms.get(target) if target is not None else None
        return row if row is not None and name in row.aliases else None

    async def delete(self, name: str) -> None:
        """Delete the row and release its name and the aliases its last registration
        declared (admins): another key may publish them. An alias's name: release it."""
        row = await self.llms.get(name)
        deleted = await self.llms.delete(name)
        released = await self.keys.release(name)
        for alias in row.aliases if row is not None else ():
            await self.keys.release_alias(alias, name)
        if not (deleted or released):
            raise _not_found(name)

    def serving(self, row: LlmRecord) -> bool:
        """Can the pool answer now (a live member serves, or can be woken)?"""
        return self.status(row) not in (LlmStatus.INACTIVE, LlmStatus.UNAVAILABLE)

    def status(self, row: LlmRecord) -> LlmStatus:
        return row.pool_status(self.clock(), self.liveness.timeout)

    def endpoints(self, row: LlmRecord) -> frozenset[str]:
        """The APIs the pool serves now (none while no member is live)."""
        return row.endpoints(self.clock(), self.liveness.timeout)

    async def _in_flight(self, session: SessionRecord, now: float) -> int | None:
        """How many tasks the session runs: those it last said it runs (recorded with a
        heartbeat, up to 15 s old) less those that have ended since (None: it does not
        say)."""
        if not session.confirmed_at:
            return None
        known = await self.tasks.get_many(list(session.running), now)
        return sum(1 for t in session.running if t not in known or not known[t].state.done)

    async def pool(self, principal: Principal, name: str) -> Pool:
        """The row with its pool: live members (with what they say they run) and queue."""
        row = await self.get(principal, name)
        if row.agent is not None:
            raise LlmNotFoundError(
                f"{name!r} is an agent, not a row: GET /v1/models/{name} shows it", param="name"
            )
        now = self.clock()
        members: list[tuple[MemberRecord, int | None, Speed | None]] = []
        for member in row.live_members(now, self.liveness.timeout):
            session = await self.stores.sessions.get(member.session_id)
            running = await self._in_flight(session, now) if session else None
            members.append((member, running, self.speeds.of(row.name, member.session_id)))
        entries = await self.stores.queues.entries(row.name, POOL_QUEUE_COUNT)
        classes = by_class(entries, now)
        waits = [c.oldest_seconds for c in classes.values() if c.oldest_seconds is not None]
        return Pool(
            row,
            self.status(row),
            members,
            len(entries),
            max(waits, default=None),
            classes,
            self.affinity.counts(row.name),
        )
