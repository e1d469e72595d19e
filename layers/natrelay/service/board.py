"""What the status page shows: every row with its pool and last hour, and every key's
usage today."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from natrelay.service.access import STATIC_IDS
from natrelay.service.context import Context
from natrelay.service.dispatch import ClassQueue, by_class
from natrelay.service.usage import Usage, day_and_minute
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
    # (requests, errors) in the last hour; None when the relay does not count them.
    last_hour: tuple[int, int] | None


@dataclass(frozen=True)
class KeyToday:
    key_id: str
    label: str
    role: Role
    revoked: bool
    usage: UsageRecord | None


class Board:
    def __init__(self, ctx: Context, usage: Usage) -> None:
        self.stores = ctx.stores
        self.liveness = ctx.liveness
        self.clock = ctx.clock
        self.usage = usage

    async def rows(self) -> list[RowState]:
        """Every row (a scan, and per row a queue count and two reads of its minutes,
        all rows' reads side by side)."""
        await self.usage.flush_rows()  # what this process counted, first
        now = self.clock()

        async def state(row: LlmRecord) -> RowState:
            entries, hour = await asyncio.gather(self._queued(row), self.usage.last_hour(row.name))
            return RowState(
                row=row,
                status=row.pool_status(now, self.liveness.timeout),
                members=row.live_members(now, self.liveness.timeout),
                queue_depth=len(entries),
                classes=by_class(entries, now) if entries else {},
                waking=row.waking(now),
                last_hour=hour,
            )

        return list(await asyncio.gather(*(state(r) for r in await self.stores.llms.all())))

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
