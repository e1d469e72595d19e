"""The client's side of a task: wait for the answer, or follow its stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from natrelay.errors import TaskNotFoundError, TaskTimeoutError
from natrelay.service.access import Principal
from natrelay.service.context import Context
from natrelay.service.endings import Endings
from natrelay.service.failover import Failover
from natrelay.service.outcomes import Outcome, task_error
from natrelay.service.payloads import loads_stored, public_model
from natrelay.store import Chunk, StreamRead, TaskRecord
from natrelay.wakeups import task_topic
from natrelay.wire import LlmStatus, Role, TaskState


def _not_found(task_id: str) -> TaskNotFoundError:
    return TaskNotFoundError(f"task {task_id} does not exist or has expired", param="id")


class Waiting:
    def __init__(self, ctx: Context, endings: Endings, failover: Failover) -> None:
        self.stores = ctx.stores
        self.tasks = ctx.tasks
        self.settings = ctx.settings
        self.clock = ctx.clock
        self.wakeups = ctx.wakeups
        self.liveness = ctx.liveness
        self._pace = ctx.wait_pace
        self.endings = endings
        self.failover = failover

    async def get(self, task_id: str) -> TaskRecord:
        task = await self.tasks.get(task_id, self.clock())
        if task is None:
            raise _not_found(task_id)
        return task

    async def get_for(self, principal: Principal, task_id: str) -> TaskRecord:
        """A task of the caller's key (admins: any); others are answered as unknown."""
        task = await self.get(task_id)
        if principal.role is not Role.ADMIN and task.client_key != principal.key_id:
            raise _not_found(task_id)
        return task

    async def queue_position(self, task: TaskRecord) -> int | None:
        """How many requests wait ahead of a task still in its pool's queue (of every
        class: the order puts higher classes first)."""
        if task.state is not TaskState.PENDING:
            return None
        order = task.queue_order if task.queue_order is not None else task.created_at
        return await self.stores.queues.position(task.llm, order)

    async def get_with_result(
        self, task_id: str, principal: Principal | None = None
    ) -> tuple[TaskRecord, bytes | None]:
        task = await (self.get_for(principal, task_id) if principal else self.get(task_id))
        result = await self._result(task) if task.state.done else None
        return task, result

    async def _result(self, task: TaskRecord) -> bytes | None:
        return task.result if task.result is not None else await self.tasks.result(task)

    async def _orphaned(self, task: TaskRecord) -> TaskRecord | None:
        """None while someone can still serve the task; otherwise the task as it ends.

        Waiting in its pool's queue, it fails only when the pool has no live member.
        Claimed by a session that no longer holds it (silent past its window, or
        restarted: service.liveness), it goes back to the head of the queue if nothing of
        it was sent — another member runs it: the waiter goes on waiting — and fails
        otherwise (a stream that started: `publisher_lost`).
        """
        now = self.clock()
        if task.session_id is None:
            row = await self.stores.llms.get(task.llm)
            if row is not None and row.pool_status(now, self.liveness.timeout) is not (
                LlmStatus.INACTIVE
            ):
                return None
            return await self.endings.fail_orphaned(task)
        ended = await self.failover.check(task)
        return ended if ended is not None and ended.state.done else None

    def _queue_deadline(self, task: TaskRecord, deadline: float) -> float:
        """When a task still waiting in its pool's queue is given up on."""
        wait = self.settings.max_queue_wait_seconds
        return min(deadline, task.created_at + wait) if wait else deadline

    async def _give_up_if_queued(self, task: TaskRecord) -> TaskRecord | None:
        """A task nobody took in time leaves the queue (503 queue_timeout)."""
        if task.state is not TaskState.PENDING:
            return None
        return await self.endings.give_up_queued(task, self.clock() - task.created_at)

    async def wait(self, task_id: str, budget: float, *, fresh: bool = False) -> TaskRecord:
        """Wait until the task is done; TaskTimeoutError (naming it) past the budget.

        `fresh`: the task was just submitted, so there is nothing to read yet.
        """
        deadline = self.clock() + budget
        pace = self._pace()
        next_liveness = self.clock() + self.liveness.check_every
        handed: list[TaskRecord] = []
        state = TaskState.PENDING
        with self.wakeups.listen(task_topic(task_id)) as listener:
            if fresh:
                await pace.wait(listener, deadline - self.clock())
                handed = [h for h in listener.take() if isinstance(h, TaskRecord)]
            while True:
                if handed and handed[-1].state.done:
                    return handed[-1]
                task = await self.get(task_id)
                if task.state.done:
                    return task
                if task.wake_id is not None:
                    pace.interval = pace.slowest  # behind a wake: seconds away, at best
                elif task.state is not state:
                    state = task.state
                    pace.reset()  # claimed: the answer may come any moment now
                now = self.clock()
                if now >= next_liveness:
                    next_liveness = now + self.liveness.check_every
                    orphaned = await self._orphaned(task)
                    if orphaned is not None:
                        return orphaned
                if now >= self._queue_deadline(task, deadline):
                    given_up = await self._give_up_if_queued(task)
                    if given_up is not None:
                        return given_up
                if now >= deadline:
                    await self.tasks.spill(task_id)  # then GET finds it in any process
                    raise TaskTimeoutError(
                        f"no answer within {budget:g} s; task {task_id} is still "
                        f"{task.state.value}: fetch it later at /api/v1/tasks/{task_id}",
                        task_id=task_id,
                    )
                await pace.wait(listener, deadline - now)
                handed = [h for h in listener.take() if isinstance(h, TaskRecord)]

    async def outcome(self, task: TaskRecord) -> Outcome:
        """The finished task's answer, or the error it ended with (raised)."""
        if task.state is TaskState.COMPLETED:
            raw = await self._result(task)
            body = public_model(loads_stored(raw), task.shown) if raw else None
            return Outcome(status=task.status or 200, body=body)
        raise task_error(task)

    async def stream(
        self,
        task_id: str,
        after_seq: int = -1,
        budget: float | None = None,
        *,
        submitted: TaskRecord | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Chunks in order as they arrive; raises the task's error if it failed.

        `submitted`: the task as just submitted, so there is nothing to read yet.
        """
        deadline = self.clock() + (budget or self.settings.stream_timeout_seconds)
        cursor = after_seq
        pace = self._pace()
        next_liveness = self.clock() + self.liveness.check_every
        hints: list[object] = []
        last: TaskRecord | None = submitted
        with self.wakeups.listen(task_topic(task_id)) as listener:
            if submitted is not None:
                await pace.wait(listener, deadline - self.clock())
                hints = listener.take()
            while True:
                read = _from_hints(hints, cursor, last)
                from_hints = read is not None
                if read is None:
                    read = await self.tasks.read_stream(task_id, cursor, self.clock())
                progressed = False
                for chunk in read.chunks:
                    if chunk.seq != cursor + 1:
                        break  # a gap: the missing batch is still being written
                    cursor = chunk.seq
                    progressed = True
                    yield chunk
                if read.task is not None and read.task.wake_id is not None:
                    pace.interval = pace.slowest  # behind a wake: seconds away, at best
                elif read.task is not None and last is not None and read.task.state != last.state:
                    pace.reset()  # claimed: the first chunk may come any moment now
                task = last = read.task
                if task is None:
                    raise _not_found(task_id)
                if task.state.done and read.complete and cursor + 1 >= task.chunk_count:
                    if task.state is not TaskState.COMPLETED:
                        raise task_error(task)
                    return
                now = self.clock()
                if now >= next_liveness:
                    next_liveness = now + self.liveness.check_every
                    if not task.state.done and await self._orphaned(task) is not None:
                        continue
                if now >= deadline:
                    await self.tasks.spill(task_id)
                    raise TaskTimeoutError(
                        f"the stream did not finish within the request's budget; task "
                        f"{task_id} goes on: read the rest at /api/v1/tasks/{task_id}/events",
                        task_id=task_id,
                    )
                if progressed and not from_hints:
                    pace.reset()
                    hints = listener.take()
                    continue  # a Query may have stopped at its page size: read on
                await pace.wait(listener, deadline - now)
                hints = listener.take()


def _from_hints(hints: list[object], cursor: int, last: TaskRecord | None) -> StreamRead | None:
    """What a stream reader can take from in-process hints without a Query, if anything.

    Only a gap-free run of chunks after the cursor counts, and only while the task's
    state is known: the last read, or a finished task record handed over with them.
    """
    chunks = sorted((h for h in hints if isinstance(h, Chunk)), key=lambda c: c.seq)
    run: list[Chunk] = []
    for chunk in chunks:
        if chunk.seq == cursor + len(run) + 1:
            run.append(chunk)
    done = [h for h in hints if isinstance(h, TaskRecord) and h.state.done]
    if done:
        final = done[-1]
        if cursor + len(run) + 1 >= final.chunk_count:
            return StreamRead(chunks=run, task=final, complete=True)
        return None
    if run and last is not None and not last.state.done:
        return StreamRead(chunks=run, task=last, complete=True)
    return None
