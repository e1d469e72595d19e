"""Ending a task from the relay's side, and telling whoever waits for it.

The one home of "force-finish a task and notify its waiters": a publisher that
shut down or vanished, a lease that ran out, a client that went away. Each ending
also records the task's usage against its client's key.
"""

from __future__ import annotations

from collections.abc import Collection

from natrelay.service.context import Context
from natrelay.service.outcomes import (
    CANCELLED_STATUS,
    OFFLINE_STATUS,
    cancelled_error,
    offline_error,
)
from natrelay.service.usage import Usage
from natrelay.store import ConditionFailedError, TaskRecord
from natrelay.wire import TaskState


def task_key(task_id: str) -> str:
    """The in-process signal key of a task's waiters."""
    return f"task:{task_id}"


def session_key(session_id: str) -> str:
    """The in-process signal key of a session's waiting polls."""
    return f"session:{session_id}"


class Endings:
    def __init__(self, ctx: Context, usage: Usage) -> None:
        self.tasks = ctx.stores.tasks
        self.leases = ctx.stores.leases
        self.clock = ctx.clock
        self.signals = ctx.signals
        self._expiry = ctx.result_expiry
        self.usage = usage

    def notify(self, task_id: str, payload: object | None = None, size: int = 0) -> None:
        """Wake this process's waiters of the task (a hint; they re-read DynamoDB)."""
        self.signals.notify(task_key(task_id), payload, size)

    async def _ended(self, task: TaskRecord, *, error: bool) -> None:
        await self.usage.record(task, error=error)
        self.notify(task.id)

    async def fail_queued(
        self, session_id: str, why: str, llms: Collection[str] | None = None
    ) -> int:
        """Fail every task still queued for a session (only those for `llms`, if given);
        returns how many."""
        failed = 0
        for task_id in await self.tasks.queued(session_id):
            now = self.clock()
            error = offline_error(f"task {task_id} was not run: {why}")
            try:
                task = await self.tasks.fail_if_pending(
                    task_id,
                    status=OFFLINE_STATUS,
                    error=error,
                    now=now,
                    expires_at=self._expiry(now),
                    llms=llms,
                )
            except ConditionFailedError:
                continue
            failed += 1
            await self._ended(task, error=True)
        return failed

    async def fail_orphaned(self, task: TaskRecord) -> TaskRecord | None:
        """Fail a task whose publisher went offline; the task as it ends up (None: gone)."""
        now = self.clock()
        error = offline_error(f"the publisher of {task.llm} went offline during task {task.id}")
        try:
            ended = await self.tasks.end_unfinished(
                task.id,
                TaskState.FAILED,
                status=OFFLINE_STATUS,
                error=error,
                now=now,
                expires_at=self._expiry(now),
            )
        except ConditionFailedError:
            self.notify(task.id)
            return await self.tasks.get(task.id, now)
        await self._ended(ended, error=True)
        return ended

    async def fail_lost_lease(self, task: TaskRecord) -> bool:
        """Fail a claimed task whose lease ran out; False if it changed meanwhile."""
        now = self.clock()
        error = offline_error(f"the publisher of {task.llm} vanished during task {task.id}")
        try:
            ended = await self.leases.fail_if_expired(
                task.id,
                status=OFFLINE_STATUS,
                error=error,
                now=now,
                expires_at=self._expiry(now),
            )
        except ConditionFailedError:
            return False
        await self._ended(ended, error=True)
        return True

    async def fail_expired(self, task: TaskRecord) -> None:
        """Fail a task that expired while queued: nobody may run it any more."""
        now = self.clock()
        error = offline_error(f"task {task.id} expired before the publisher of {task.llm} took it")
        try:
            ended = await self.tasks.fail_if_pending(
                task.id,
                status=OFFLINE_STATUS,
                error=error,
                now=now,
                expires_at=self._expiry(now),
            )
        except ConditionFailedError:
            return
        await self._ended(ended, error=True)

    async def cancel(self, task_id: str, why: str = "the client went away") -> None:
        """Cancel a task that is not done (the publisher aborts it); no-op if done."""
        now = self.clock()
        error = cancelled_error(f"task {task_id} was cancelled: {why}")
        try:
            ended = await self.tasks.end_unfinished(
                task_id,
                TaskState.CANCELLED,
                status=CANCELLED_STATUS,
                error=error,
                now=now,
                expires_at=self._expiry(now),
            )
        except ConditionFailedError:
            return
        await self._ended(ended, error=False)
