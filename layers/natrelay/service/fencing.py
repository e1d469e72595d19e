"""Why the relay refuses a publisher's write on a claimed task (a chunk, a result):
the claim moved to another member (fenced, 409 task_moved), was cancelled, ended, or
is not this session's. Another key's session learns nothing of the task."""

from __future__ import annotations

from natrelay.errors import (
    RelayError,
    ResultConflictError,
    TaskCancelledError,
    TaskMovedError,
    TaskNotClaimedError,
)
from natrelay.store import ConditionFailedError, Holder, TaskRecord
from natrelay.wire import TaskState


def _not_claimed(task_id: str) -> TaskNotClaimedError:
    # The same answer for a task that does not exist and one another session holds.
    return TaskNotClaimedError(f"task {task_id} is not claimed by this session")


def chunk_differs(task_id: str, seq: int) -> ResultConflictError:
    return ResultConflictError(
        f"chunk {seq} of task {task_id} was already posted with other content", param="seq"
    )


def refused(task_id: str, holder: Holder, exc: ConditionFailedError) -> RelayError:
    """Why a write on a claimed task lost its condition, as the publisher must hear it
    (and nothing more: another key's session learns nothing of the task)."""
    old = exc.record
    if not isinstance(old, TaskRecord):
        return _not_claimed(task_id)
    if old.lost_by == holder.session_id and old.claimed_by != holder.session_id:
        # fenced: the claim it posts for moved on (another member runs the task, or ran it)
        return TaskMovedError(
            f"task {task_id} went to another member of its pool: this publisher missed its "
            "work window (frozen or cut off); drop it, another answer is the client's"
        )
    if old.claimed_key not in (holder.key, None):
        return _not_claimed(task_id)
    if old.state is TaskState.CANCELLED:
        return TaskCancelledError(f"task {task_id} was cancelled: the client went away")
    if old.claimed_by != holder.session_id:
        return _not_claimed(task_id)
    if old.state.done:
        return ResultConflictError(f"task {task_id} is already {old.state.value}")
    return TaskNotClaimedError(f"task {task_id} is {old.state.value}")
