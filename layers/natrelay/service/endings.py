"""Ending a task, and telling whoever waits for it.

The one home of "a task ended: count its usage and wake its waiters" — its publisher's
result (`answered`), or an ending the relay forces: a publisher that shut down or
vanished, a lease that ran out, a client that went away — and of handing a task back to
its pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from natrelay.service.context import Context
from natrelay.service.outcomes import (
    CANCELLED_STATUS,
    LOST_STATUS,
    OFFLINE_STATUS,
    cancelled_error,
    lost_error,
    offline_error,
)
from natrelay.service.usage import Usage
from natrelay.store import ConditionFailedError, TaskRecord
from natrelay.wakeups import pool_topic, task_topic
from natrelay.wire import ErrorCode, TaskState

log = logging.getLogger("natrelay.service")


@dataclass(frozen=True)
class PoolHint:
    """What a poll of the pool is told of a new task (an optimisation: the claim decides)."""

    task_id: str
    llm: str
    target_session: str | None = None
    wake_target: str | None = None
    # The member its conversation prefers, until when (service.affinity).
    prefer: str | None = None
    prefer_until: float | None = None
    # When it was queued (None: just now), and where it sorts in the queue (None: not
    # known; service.dispatch.queue_order).
    queued_at: float | None = None
    order: float | None = None


class Endings:
    def __init__(self, ctx: Context, usage: Usage) -> None:
        self.tasks = ctx.tasks
        self.queues = ctx.stores.queues
        self.leases = ctx.stores.leases
        self.clock = ctx.clock
        self.wakeups = ctx.wakeups
        self._expiry = ctx.result_expiry
        self.usage = usage

    def notify(self, task_id: str, payload: object | None = None, size: int = 0) -> None:
        """Wake this process's waiters of the task (a hint; they re-read the task)."""
        self.wakeups.notify(task_topic(task_id), payload, size)

    async def answered(self, task: TaskRecord, *, body: Any, error: bool) -> None:
        """Its publisher's result ended the task: count its usage (and free its slot) and
        hand the task to its waiters. The usage first, so the client's next request, sent
        the moment it has this answer, finds its slot free and its tokens counted; unless
        the task says it may come later (a key without limits, its record written behind
        the answer too)."""
        if not task.usage_later:
            await self.usage.record(task, body=body, error=error)
        self.notify(task.id, task)
        if task.usage_later:
            await self.usage.record(task, body=body, error=error, later=True)

    async def _ended(self, task: TaskRecord, *, error: bool) -> None:
        """The relay ended the task: its usage, then its waiters (who re-read it)."""
        await self.usage.record(task, error=error)
        self.notify(task.id)

    async def fail_queued(self, llm: str, why: str) -> int:
        """Fail every task still waiting in the pool's queue; returns how many."""
        failed = 0
        for task_id in await self.queues.queued(llm):
            now = self.clock()
            error = offline_error(f"task {task_id} was not run: {why}")
            try:
                task = await self.tasks.fail_if_pending(
                    task_id,
                    status=OFFLINE_STATUS,
                    error=error,
                    now=now,
                    expires_at=self._expiry(now),
                )
            except ConditionFailedError:
                continue
            failed += 1
            await self._ended(task, error=True)
        return failed

    async def fail_orphaned(self, task: TaskRecord) -> TaskRecord | None:
        """Fail a task whose publisher went offline; the task as it ends up (None: gone).
        A stream that had sent bytes ends `publisher_lost`, with the usage counted so far."""
        now = self.clock()
        error = (
            lost_error(task)
            if task.sent_any
            else offline_error(f"the publisher of {task.llm} went offline during task {task.id}")
        )
        try:
            ended = await self.tasks.end_unfinished(
                task.id,
                TaskState.FAILED,
                status=LOST_STATUS if task.sent_any else OFFLINE_STATUS,
                error=error,
                now=now,
                expires_at=self._expiry(now),
            )
        except ConditionFailedError:
            self.notify(task.id)
            return await self.tasks.get(task.id, now)
        await self._ended(ended, error=True)
        return ended

    async def hand_back(self, task: TaskRecord) -> TaskRecord | None:
        """The session that claimed the task left, restarted, died or missed its work
        window: the task goes back to the head of its pool's queue at once if nothing of
        it was sent (another member runs it), and fails otherwise (a stream that had
        started cannot move). Of many who notice at once, one does it; None: the task
        moved on meanwhile (requeued by another, or claimed again)."""
        lost = task.session_id
        if lost is None:
            return None
        if not task.sent_any:
            try:
                requeued = await self.tasks.requeue_if_unsent(task, lost, self.clock())
            except ConditionFailedError:
                current = await self.tasks.get(task.id, self.clock())
                if current is None or current.state.done:
                    return current
                if current.session_id != lost or current.attempts != task.attempts:
                    return None  # another noticed first: it is queued or claimed again
                task = current  # it sent something meanwhile: it fails below
            else:
                log.info(
                    "task %s of %s back in its pool's queue: its publisher was lost",
                    task.id,
                    task.llm,
                )
                self.wakeups.notify_one(pool_topic(task.llm), PoolHint(task.id, task.llm))
                return requeued
        return await self.fail_orphaned(task)

    async def give_up_queued(self, task: TaskRecord, waited: float) -> TaskRecord | None:
        """Take a task that waited too long in its pool's queue out of it (nobody runs it
        any more); None if a member took it meanwhile."""
        now = self.clock()
        error = {
            "message": f"task {task.id} waited {waited:.0f} s in the queue of {task.llm}, "
            "every member of its pool busy; try again later",
            "code": ErrorCode.QUEUE_TIMEOUT.value,
            "type": ErrorCode.QUEUE_TIMEOUT.type.value,
        }
        try:
            ended = await self.tasks.fail_if_pending(
                task.id, status=OFFLINE_STATUS, error=error, now=now, expires_at=self._expiry(now)
            )
        except ConditionFailedError:
            return None
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
