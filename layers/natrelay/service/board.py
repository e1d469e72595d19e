"""What the console's overview shows: every row with its pool, queue, wake and recent
requests, every agent with its target and status, and every key's usage today."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from natrelay.service.access import STATIC_IDS
from natrelay.service.agents import Agents
from natrelay.service.context import Context
from natrelay.service.dispatch import ClassQueue, by_class
from natrelay.service.row_stats import Recent, RowStats
from natrelay.service.usage import day_and_minute
from natrelay.store import LlmRecord, MemberRecord, Queued, UsageRecord
from natrelay.wire import LlmStatus, Priority, Role

# The page counts a pool's queue up to this many.
QUEUE_COUNT = 1000


@dataclass(frozen=True)
class RowState:
    row: LlmRecord
    status: LlmStatus
    members: list[MemberRecord]
    queue_depth: int
    # The requests waiting, by class (none for a public row).
    classes: dict[Priority, ClassQueue]
    waking: bool
    # Its last hour and today; None when the relay does not count them.
    recent: Recent | None
    # What each live member's publisher last said it runs (all its rows' tasks), by
    # session id; None: it does not say.
    running: dict[str, int | None] = field(default_factory=dict)

    @property
    def capacity(self) -> int | None:
        """Requests its live members take at once (None: one of them sets no limit)."""
        limits = [m.max_concurrency for m in self.members]
        if not limits or any(n is None for n in limits):
            return None
        return sum(n or 0 for n in limits)


@dataclass(frozen=True)
class AgentState:
    agent: LlmRecord
    status: LlmStatus
    # Its last hour and today (counted as its rows' are); None when not counted.
    recent: Recent | None


@dataclass(frozen=True)
class KeyToday:
    key_id: str
    label: str
    role: Role
    revoked: bool
    usage: UsageRecord | None


class Board:
    def __init__(self, ctx: Context, rows: RowStats, agents: Agents) -> None:
        self.stores = ctx.stores
        self.liveness = ctx.liveness
        self.clock = ctx.clock
        self.row_stats = rows
        self.agents = agents

    async def rows(self) -> list[RowState]:
        """Every row (a scan, and per row a queue count and one Query of its hours, and
        per live member its session, all side by side)."""
        await self.row_stats.flush()  # what this process counted, first
        now = self.clock()

        async def state(row: LlmRecord) -> RowState:
            entries, recent = await asyncio.gather(
                self._queued(row), self.row_stats.recent(row.name)
            )
            return RowState(
                row=row,
                status=row.pool_status(now, self.liveness.timeout),
                members=row.live_members(now, self.liveness.timeout),
                queue_depth=len(entries),
                classes=by_class(entries, now) if entries else {},
                waking=row.waking(now),
                recent=recent,
            )

        rows = [r for r in await self.stores.llms.all() if r.agent is None]
        states = await asyncio.gather(*(state(r) for r in rows))
        running = await self._running({m.session_id for s in states for m in s.members})
        return sorted(
            (replace(s, running={m.session_id: running[m.session_id] for m in s.members})
             for s in states),
            key=lambda s: s.row.name,
        )  # fmt: skip

    async def agent_states(self) -> list[AgentState]:
        """Every agent, with its status (its rows') and its recent requests."""
        await self.row_stats.flush()

        async def state(agent: LlmRecord) -> AgentState:
            status, recent = await asyncio.gather(
                self.agents.status(agent), self.row_stats.recent(agent.name)
            )
            return AgentState(agent, status, recent)

        agents = [r for r in await self.stores.llms.all() if r.agent is not None]
        return list(await asyncio.gather(*(state(a) for a in agents)))

    async def _running(self, session_ids: set[str]) -> dict[str, int | None]:
        """How many tasks each session's publisher said it runs in its last heartbeat (one
        read per session, side by side)."""
        ids = sorted(session_ids)
        sessions = await asyncio.gather(*(self.stores.sessions.get(i) for i in ids))
        return {
            i: len(s.running) if s is not None and s.confirmed_at else None
            for i, s in zip(ids, sessions, strict=True)
        }

    async def _queued(self, row: LlmRecord) -> list[Queued]:
        return [] if row.public else await self.stores.queues.entries(row.name, QUEUE_COUNT)

    async def keys_today(self) -> list[KeyToday]:
        """Every stored key, and the simple mode's shared tokens if they were used today."""
        today = day_and_minute(self.clock())[0]
        keys = await self.stores.keys.all()
        ids = [k.id for k in keys] + list(STATIC_IDS.values())
        days = await asyncio.gather(*(self.stores.usage.days(i, today) for i in ids))
        used = dict(zip(ids, (_first(d) for d in days), strict=True))
        out = [
            KeyToday(key.id, key.label, key.role, key.revoked_at is not None, used[key.id])
            for key in keys
        ]
        for role, key_id in STATIC_IDS.items():
            shared = used[key_id]
            if shared is not None:
                out.append(KeyToday(key_id, f"shared {role.value} token", role, False, shared))
        return out


def _first(days: list[UsageRecord]) -> UsageRecord | None:
    return days[0] if days else None
