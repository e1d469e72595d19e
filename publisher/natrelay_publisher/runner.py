"""Running the tasks the relay hands out: each as its own asyncio task, on its slot."""

from __future__ import annotations

import asyncio
import logging
import time

from natrelay.wire import MAX_TASKS_PER_POLL, ErrorCode, PolledTask, TaskKind, trace
from natrelay.wire.trace import Tracing
from natrelay_publisher.errors import RelayUnavailableError, TaskGoneError
from natrelay_publisher.infer import TaskPoster, run_infer
from natrelay_publisher.relay import RelayClient, retrying
from natrelay_publisher.session import Session
from natrelay_publisher.slots import ProviderSlot
from natrelay_publisher.wake import Waker

logger = logging.getLogger("natrelay.publisher")

# How long a task cancelled by the shutdown keeps trying to post its failure.
SHUTDOWN_RESULT_SECONDS = 5.0
# How long a task whose request did not come with the poll tries to fetch it.
FETCH_REQUEST_SECONDS = 60.0


class TaskRunner:
    """Runs each task it is given (infer or wake) and posts its answer; counts the slots
    they take, so polls ask for no more than the publisher can run."""

    def __init__(
        self,
        relay: RelayClient,
        slots: dict[str, ProviderSlot],
        waker: Waker,
        session: Session,
        tracing: Tracing | None = None,
    ) -> None:
        self.relay = relay
        # Each task runs in a span under the relay's (its log lines and its requests to
        # the backend and the relay carry it).
        self.tracing = tracing or Tracing("natrelay-publisher")
        self.slots = slots
        self.waker = waker
        self.session = session
        # The asyncio tasks running them (their ids are in `session.running`).
        self.tasks: set[asyncio.Task[None]] = set()
        # Set when a slot frees: a poll held back for want of one may go.
        self.slot_freed = asyncio.Event()
        # Set while no infer task is accepted and unfinished.
        self.no_infer = asyncio.Event()
        self.no_infer.set()
        # How long a task cancelled by the shutdown keeps trying to post its failure.
        self.give_up_after = SHUTDOWN_RESULT_SECONDS
        # Tasks the relay said nobody wants any more (their client went away): stopped.
        self._unwanted: set[str] = set()

    def stop_unwanted(self, task_ids: list[str] | None) -> None:
        """Stop the tasks the relay says nobody wants any more (their client went away,
        or the relay ended them, in a heartbeat's or poll's `cancelled`): the backend
        request is aborted, the slot freed, nothing posted."""
        for running in list(self.tasks):
            task_id = running.get_name().removeprefix("task-")
            if task_id in (task_ids or ()) and task_id in self.session.running:
                self._unwanted.add(task_id)
                running.cancel()

    def free_slots(self) -> int:
        """How many tasks a poll may ask for now."""
        free = sum(slot.free for slot in self.slots.values())
        # An infer waiting for a wake task that is still queued must not block its arrival.
        if self.waker.awaiting_arrival:
            free = max(free, 1)
        return min(free, MAX_TASKS_PER_POLL)

    def free_per_name(self) -> dict[str, int]:
        """How many infer tasks each provider may take now (wakes meant for it come
        regardless)."""
        return {name: min(slot.free, MAX_TASKS_PER_POLL) for name, slot in self.slots.items()}

    def dispatch(self, task: PolledTask) -> None:
        """Start running a task a poll brought."""
        self.session.running.add(task.id)
        slot = self.slots.get(task.llm)
        if slot is not None and task.kind == TaskKind.INFER:
            slot.held += 1
            self.no_infer.clear()
        if slot is not None:
            slot.touch()
        running = asyncio.create_task(self._run(task, slot), name=f"task-{task.id}")
        self.tasks.add(running)
        running.add_done_callback(self.tasks.discard)

    async def _run(self, task: PolledTask, slot: ProviderSlot | None) -> None:
        with self.tracing.span(
            f"{task.kind.value} {task.llm}", task.traceparent, "consumer"
        ) as span:
            trace.current.set(span.traceparent)  # this asyncio task's context only
            span.attributes.update({"natrelay.task_id": task.id, "natrelay.llm": task.llm})
            await self._run_traced(task, slot)

    async def _run_traced(self, task: PolledTask, slot: ProviderSlot | None) -> None:
        released = False

        def release() -> None:
            # The backend is done with it: its slot is free for the next poll while the
            # answer is posted (a poll sent meanwhile offers it).
            nonlocal released
            if not released:
                released = True
                if slot is not None and task.kind == TaskKind.INFER:
                    slot.held -= 1
                self.slot_freed.set()

        poster = TaskPoster(self.relay, self.session.require_id, task.id, on_done=release)
        started = time.monotonic()
        try:
            if slot is None:
                message = f"this publisher does not serve {task.llm}"
                await poster.fail(ErrorCode.MODEL_NOT_FOUND, message)
            elif task.kind == TaskKind.WAKE:
                await self._wake(task, slot, poster)
            else:
                status = await self._infer(task, slot, poster)
                if 200 <= status < 300:
                    slot.answered_at = time.monotonic()
                ms = int((time.monotonic() - started) * 1000)
                mode = "stream" if task.stream else "complete"
                logger.info("task %s: %s %s -> %s in %d ms", task.id, mode, task.llm, status, ms)
        except asyncio.CancelledError:
            if task.id in self._unwanted:  # the relay's word: nobody would read an answer
                logger.info("task %s: its client went away; backend request aborted", task.id)
                return
            message = "the publisher shut down before the task finished"
            await poster.fail(
                ErrorCode.PUBLISHER_OFFLINE, message, give_up_after=self.give_up_after
            )
            raise
        except Exception as exc:  # never leave a client waiting on a bug of ours
            logger.exception("task %s failed", task.id)
            await poster.fail(ErrorCode.PUBLISHER_ERROR, f"the publisher failed: {exc!r}")
        finally:
            self.session.running.discard(task.id)
            self._unwanted.discard(task.id)
            release()
            if slot is not None:
                slot.touch()
            if not any(s.held for s in self.slots.values()):
                self.no_infer.set()
            self.slot_freed.set()

    async def _wake(self, task: PolledTask, slot: ProviderSlot, poster: TaskPoster) -> None:
        outcome = await self.waker.wake(slot, task.id)
        if outcome.ok:
            await poster.result(status=200, body={"ok": True, "ms": outcome.ms})
        else:
            await poster.fail(ErrorCode.WAKE_FAILED, outcome.message)

    async def _infer(self, task: PolledTask, slot: ProviderSlot, poster: TaskPoster) -> int:
        """Run an infer task once its backend is awake and a slot is free; returns the
        status posted."""
        outcome = await self.waker.before_infer(slot, task.wake_id)
        if outcome is not None and not outcome.ok:
            return await poster.fail(ErrorCode.WAKE_FAILED, outcome.message)
        async with slot.semaphore:
            slot.touch()
            request = task.request
            if request is None and task.request_size > 0:
                try:
                    request = await retrying(
                        lambda: self.relay.task_request(task.id, self.session.require_id()),
                        give_up_after=FETCH_REQUEST_SECONDS,
                    )
                except (TaskGoneError, RelayUnavailableError) as exc:
                    logger.warning("task %s: cannot fetch its request: %s", task.id, exc)
                    return 502
            if request is None:
                return await poster.fail(ErrorCode.INVALID_REQUEST, "the task carries no request")
            endpoint = slot.endpoint_of(task.endpoint)
            if endpoint is None:
                message = f"{slot.name} does not serve {task.endpoint!r} here"
                return await poster.fail(ErrorCode.ENDPOINT_NOT_SERVED, message)
            async with slot.health.request():
                return await run_infer(slot.provider, request, task.stream, poster, endpoint)
