"""Failover: a publisher that no longer holds the tasks it claimed (silent past its work
window, gone, restarted: service.liveness) loses them to its pool, without a restart.

The one home of that move. Whoever notices first calls it — a waiting client's handler,
the sweep, a doorbell that closed (`$disconnect`, a death notice), a long-poll dropped
by a member that holds tasks (a hint, checked one work beat later) — and the store's
conditional write (same claim, same attempt, nothing sent) lets exactly one of them
requeue each task. A task that sent nothing goes back to the head of its pool's queue
and its pool's members are rung; a stream that sent bytes ends `publisher_lost`.
"""

from __future__ import annotations

import asyncio
import logging

from natrelay.service.context import Context
from natrelay.service.doorbell import Doorbell
from natrelay.service.endings import Endings, PoolHint
from natrelay.store import SessionRecord, TaskRecord
from natrelay.wire import TaskState, fingerprint

log = logging.getLogger("natrelay.failover")


class Failover:
    def __init__(self, ctx: Context, endings: Endings, doorbell: Doorbell) -> None:
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.endings = endings
        self.doorbell = doorbell
        self._checks: set[asyncio.Task[None]] = set()

    async def check(self, task: TaskRecord) -> TaskRecord | None:
        """None while the session that claimed the task holds it; else the task moves
        (see `move`)."""
        if task.state is not TaskState.CLAIMED or task.session_id is None:
            return None
        session = await self.stores.sessions.get(task.session_id)
        if self.liveness.holds(session, task, self.clock()):
            return None
        return await self.move(task)

    async def move(self, task: TaskRecord) -> TaskRecord | None:
        """Take the task from the session that claimed it: back to the head of its pool's
        queue (its members rung), or failed if it sent something; the task as it ends
        up (None: someone else moved it first)."""
        ended = await self.endings.hand_back(task)
        if ended is not None and ended.state is TaskState.PENDING:
            row = await self.stores.llms.get(task.llm)
            await self.doorbell.queued(PoolHint(task.id, task.llm), row)
        return ended

    async def sweep(self, now: float) -> int:
        """Move every task in DynamoDB (its lease still running) whose session no longer
        holds it; how many moved. (Tasks a process holds in memory are watched by their
        waiters there.)"""
        moved = 0
        sessions: dict[str, SessionRecord | None] = {}
        for task in await self._claimed(now):
            sid = task.session_id or ""
            if sid not in sessions:
                sessions[sid] = await self.stores.sessions.get(sid)
            if not self.liveness.holds(sessions[sid], task, now):
                moved += await self.move(task) is not None
        return moved

    async def session_lost(self, session_id: str) -> int:
        """A death notice (its doorbell closed): every task the session holds moves at
        once; how many."""
        now = self.clock()
        held = await self.tasks.held_by(session_id)
        seen = {t.id for t in held}
        mine = held + [
            t for t in await self._claimed(now) if t.session_id == session_id and t.id not in seen
        ]
        moved = 0
        for task in mine:
            moved += await self.move(task) is not None
        if moved:
            log.info("session %s lost: %d tasks moved", fingerprint(session_id), moved)
        return moved

    @property
    def checking(self) -> int:
        """How many of those checks (`suspect`) are still under way."""
        return len(self._checks)

    def suspect(self, session: SessionRecord, since: float) -> None:
        """A hint that the session may be gone (its long-poll dropped while it holds
        tasks): unless it beats within a work beat or two, its tasks move."""
        if not session.work_beats:
            return
        job = asyncio.get_running_loop().create_task(self._check_later(session.id, since))
        self._checks.add(job)
        job.add_done_callback(self._checks.discard)

    async def _check_later(self, session_id: str, since: float) -> None:
        await asyncio.sleep(2 * self.settings.work_beat_seconds)
        try:
            session = await self.stores.sessions.get(session_id)
            if session is None or session.heartbeat_at <= since:
                await self.session_lost(session_id)
        except Exception:
            log.warning("checking session %s failed", fingerprint(session_id), exc_info=True)

    async def _claimed(self, now: float) -> list[TaskRecord]:
        """The claimed tasks in DynamoDB whose lease still runs."""
        ids = await self.stores.leases.running(now)
        found = await self.tasks.get_many(ids, now) if ids else {}
        return [
            t for t in found.values() if t.state is TaskState.CLAIMED and t.session_id is not None
        ]
