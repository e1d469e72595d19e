"""Pools: every live session of the owning key that publishes a name serves it.

A member joins by registering the name and leaves by deregistering (or by dying: its
heartbeat stops). The pool is served while a member lives; its queue is failed only
when the last member has gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from natrelay.service.context import Context
from natrelay.service.endings import Endings
from natrelay.store import ConditionFailedError, LlmRecord, SessionRecord, TaskRecord
from natrelay.wire import Endpoint, ErrorCode

log = logging.getLogger("natrelay.service")


class Pools:
    def __init__(self, ctx: Context, endings: Endings) -> None:
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.endings = endings

    async def leave(
        self, session: SessionRecord, names: Iterable[str], why: str
    ) -> list[LlmRecord]:
        """Take the session out of the pools of `names`; a pool left with no live member
        is retired and its queue failed. The rows as they are left."""
        rows: list[LlmRecord] = []
        for name in sorted(names):
            row = await self.stores.llms.leave(name, session.id)
            if row is None:
                continue  # not a member (any more)
            now = self.clock()
            if not row.live_members(now, self.liveness.timeout):
                try:
                    row = await self.stores.llms.retire_if_deserted(
                        name, now, row.last_heartbeat_at or 0.0
                    )
                except ConditionFailedError:
                    pass  # a member beat meanwhile: the pool lives on
                else:
                    await self.endings.fail_queued(name, why)
            rows.append(row)
        return rows

    async def hand_back(self, session: SessionRecord) -> None:
        """The tasks the session last said it runs go back to their pools (or fail, if
        they had sent something)."""
        now = self.clock()
        for task_id in sorted(session.running):
            task = await self.tasks.get(task_id, now)
            if task is not None and not task.state.done and task.session_id == session.id:
                await self.endings.hand_back(task)

    async def learn_not_served(self, task: TaskRecord, session_id: str) -> None:
        """A task whose backend answered that it does not serve the task's endpoint (404
        or 405, `endpoint_not_served`): the member no longer offers it, so the next such
        request is refused at once and /v1/models stops listing it (its publisher's next
        registration declares its endpoints again)."""
        code = (task.error or {}).get("code")
        if code != ErrorCode.ENDPOINT_NOT_SERVED or task.endpoint == Endpoint.CHAT:
            return
        row = await self.stores.llms.fresh(task.llm)
        member = row.members.get(session_id) if row is not None else None
        if member is None or task.endpoint not in member.endpoints:
            return
        served = member.endpoints
        if await self.stores.members.drop_endpoint(task.llm, session_id, served, task.endpoint):
            log.info(
                "%s: a backend answered that it does not serve %s: no longer offered there",
                task.llm,
                Endpoint(task.endpoint).path,
            )

    async def prune(self, rows: Iterable[LlmRecord]) -> None:
        """Drop the members of these rows whose heartbeat stopped (each write checks it)."""
        now = self.clock()
        cutoff = self.liveness.cutoff(now)
        for row in rows:
            timeout = self.liveness.timeout
            dead = [m.session_id for m in row.members.values() if not m.alive(now, timeout)]
            if dead:
                await self.stores.llms.drop_dead_members(row.name, dead, cutoff)
                log.info("%s: %d member(s) gone from its pool", row.name, len(dead))
