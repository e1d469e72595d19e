"""The recent requests of a key or a row, and where one of them spent its time (its
task's own timestamps: service.timeline)."""

from __future__ import annotations

from dataclasses import dataclass

from natrelay.service.context import Context
from natrelay.service.timeline import Marks
from natrelay.store import TaskRecord

# A page of the request list.
PAGE = 25


@dataclass(frozen=True)
class Traced:
    """A task, the wake it waited for (if it did, and that is still kept), and its marks."""

    task: TaskRecord
    wake: TaskRecord | None
    marks: Marks


class RecentRequests:
    def __init__(self, ctx: Context) -> None:
        recent = ctx.stores.recent
        assert recent is not None, "Stores.on makes the recent tasks' store"
        self.recent = recent
        self.tasks = ctx.tasks
        self.clock = ctx.clock

    async def of(
        self, *, key_id: str | None = None, llm: str | None = None, before: float | None = None
    ) -> list[TaskRecord]:
        """A page of the newest tasks of a client key or of a row (created before
        `before`)."""
        return await self.recent.of(
            key_id=key_id, llm=llm, limit=PAGE, before=before, now=self.clock()
        )

    async def traced(self, task_id: str) -> Traced | None:
        """A task with its timeline (one read, and one more for the wake it waited for)."""
        now = self.clock()
        task = await self.tasks.get(task_id, now)
        if task is None:
            return None
        wake = await self.tasks.get(task.wake_id, now) if task.wake_id else None
        return Traced(task, wake, Marks.of(task, wake))


__all__ = ["PAGE", "RecentRequests", "Traced"]
