"""Tasks a publisher still runs that nobody wants any more: their client went away or
stopped waiting (the task was cancelled), or the relay ended or moved them. Its
heartbeats and polls say which it runs (`running`); their answers name these
(`cancelled`), and the publisher aborts the backend request, freeing the slot.

What the task storage holds in this process's memory (the fast path) is known at once.
A task the relay cancelled is marked on the session that runs it (Endings.cancel), and
the write of the session's next work beat or heartbeat takes the marks (`told`): a busy
publisher hears within one work beat, in either mode, at no request of its own. The
rest is read in one batch, at most every CHECK_SECONDS per session in each process (a
busy publisher's heartbeats and polls must not each cost a read): the backstop for what
no mark says (a task the relay moved, a mark whose answer was lost).
"""

from __future__ import annotations

from collections.abc import Iterable

from natrelay.service.context import Context
from natrelay.store import TaskRecord
from natrelay.wire import TaskState

CHECK_SECONDS = 10.0
# Sessions remembered for the pace of their checks (a cap, not a rule).
_REMEMBERED = 10_000


def wanted(task: TaskRecord | None, session_id: str) -> bool:
    """Whether the session should go on running the task."""
    if task is None or task.session_id != session_id:
        return False
    return task.state in (TaskState.CLAIMED, TaskState.COMPLETED)


class Abandoned:
    def __init__(self, ctx: Context) -> None:
        self.tasks = ctx.tasks
        self.clock = ctx.clock
        self._checked: dict[str, float] = {}

    async def of(
        self, session_id: str, running: list[str] | None, told: Iterable[str] = ()
    ) -> list[str]:
        """The tasks of `running` the session should stop; `told`: those its beat took
        the cancel marks of (a mark of a task it does not run is dropped)."""
        if not running:
            return []
        now = self.clock()
        marked = set(told)
        known = self.tasks.held(running)  # no request
        unwanted = [t for t in running if t in marked]
        unwanted += [
            t for t, task in known.items() if t not in marked and not wanted(task, session_id)
        ]
        rest = [t for t in running if t not in known and t not in marked]
        if rest and now - self._checked.get(session_id, 0.0) >= CHECK_SECONDS:
            if len(self._checked) >= _REMEMBERED:
                self._checked.clear()
            self._checked[session_id] = now
            found = await self.tasks.get_many(rest, now)
            unwanted += [t for t in rest if not wanted(found.get(t), session_id)]
        return unwanted
