"""The publisher daemon: register, heartbeat, long-poll, run tasks, shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from typing import Any

import httpx

from natrelay.wire import (
    MAX_TASKS_PER_POLL,
    ErrorCode,
    HeartbeatRequest,
    LlmStatus,
    PolledTask,
    PollRequest,
    RegisterRequest,
    SessionRequest,
    SessionResponse,
    TaskKind,
    fingerprint,
)
from natrelay_publisher.config import PublisherConfig
from natrelay_publisher.doorbell import Doorbell
from natrelay_publisher.errors import (
    NameHeldError,
    RelayAuthError,
    RelayCallError,
    RelayUnavailableError,
    SessionLostError,
    TaskGoneError,
)
from natrelay_publisher.infer import TaskPoster, run_infer
from natrelay_publisher.pools import pool_news
from natrelay_publisher.relay import Backoff, RelayClient, retrying
from natrelay_publisher.session import SessionFile
from natrelay_publisher.slots import ProviderSlot
from natrelay_publisher.wake import Waker

logger = logging.getLogger("natrelay.publisher")

DEREGISTER_SECONDS = 10.0
SHUTDOWN_RESULT_SECONDS = 5.0
IDLE_TICK_SECONDS = 1.0
MIN_EMPTY_POLL_SECONDS = 0.5
# While one provider is at its concurrency limit and the others are not, polls wait at
# most this long: the poll declares that provider full, and a slot that frees is offered
# at the next poll (a poll cannot be told of it while it waits).
FULL_POLL_SECONDS = 2.0
REGISTER_GRACE_SECONDS = 3.0
# After a second Ctrl-C: failing the tasks in flight, then deregistering, each this long.
HURRY_STEP_SECONDS = 2.0
# A backend without a wake recipe is reported unavailable after this many failed checks
# in a row, and re-checked this often while it is.
UNAVAILABLE_AFTER_CHECKS = 2
UNAVAILABLE_RECHECK_SECONDS = 5.0


class Publisher:
    """Publishes the configured providers to the relay until `stop` is set."""

    def __init__(
        self, config: PublisherConfig, *, relay_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.session_id: str | None = None
        self._generation: int | None = None
        self._transport = relay_transport
        self._session_file = SessionFile(config.session_file)
        self._slots: dict[str, ProviderSlot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # ids of the tasks in flight, told to the relay
        # Tasks the relay said nobody wants any more (their client went away): stopped.
        self._unwanted: set[str] = set()
        # How many other live publishers serve each name with us (natrelay_publisher.pools).
        self._pool_peers: dict[str, int] = {}
        self._slot_freed = asyncio.Event()
        # Set while no infer task is accepted and unfinished.
        self._no_infer = asyncio.Event()
        self._no_infer.set()
        self._register_lock = asyncio.Lock()
        self._beat_lock = asyncio.Lock()
        self._registered_at = 0.0
        self._server_view: dict[str, LlmStatus] = {}
        self._reported: dict[str, LlmStatus] = {}
        # Names another live session holds (name -> the relay's refusal): not registered.
        self._held: dict[str, str] = {}
        # How long a task cancelled by the shutdown keeps trying to post its failure.
        self._give_up_after = SHUTDOWN_RESULT_SECONDS
        self._waker = Waker(self._beat_quietly)
        # What the doorbell (natrelay_publisher.doorbell) reads and bumps.
        self.registrations = 0
        self.announced_doorbell: str | None = None
        self.heartbeat_timeout: float | None = None
        self._doorbell: Doorbell | None = None
        self.relay = RelayClient(
            config.relay.url, config.relay.token.get_secret_value(), transport=relay_transport
        )

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set; raises RelayAuthError when the token is refused,
        SessionFileBusyError when another process uses the session file.

        Once stopping, `hurry` (a second Ctrl-C) cuts the grace short: the tasks in
        flight are failed and the session deregistered within a few seconds.
        """
        hurry = hurry or asyncio.Event()
        try:
            self._session_file.lock()
            logger.info("session file %s", self._session_file.path)
            if _plain_http_elsewhere(self.config.relay.url):
                logger.warning(
                    "relay.url %s is plain http: the publish token and every prompt and answer "
                    "cross the network unencrypted; use https://",
                    self.config.relay.url,
                )
            beat = self.config.relay.heartbeat_seconds
            self._slots = {
                c.name: ProviderSlot.build(c, heartbeat_seconds=beat) for c in self.config.published
            }
            await self._initial_statuses()
            registering = asyncio.create_task(self._register(), name="register")
            if not await _first_of([registering], stop):
                # A registration in flight may land yet: then it must be undone. One that
                # is only waiting to try again can go at once.
                if self.relay.in_flight:
                    await asyncio.wait({registering}, timeout=REGISTER_GRACE_SECONDS)
                await _cancel(registering)
                if self.session_id is not None:
                    await self._deregister()
                return
            registering.result()
            relay = self.config.relay
            self._doorbell = Doorbell.of(
                self, relay.doorbell, relay.token.get_secret_value(), relay.poll_wait_seconds
            )
            loops = [
                asyncio.create_task(
                    self._doorbell.run() if self._doorbell else self._poll_loop(), name="poll"
                ),
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self._held_loop(), name="held"),
            ]
            if any(slot.config.sleep_after_idle_seconds for slot in self._slots.values()):
                loops.append(asyncio.create_task(self._idle_loop(), name="idle"))
            if await _first_of(loops, stop):
                # The loops only end by an error (a refused token, a protocol mismatch).
                failed = next(loop for loop in loops if loop.done())
                await _cancel(*loops, *self._tasks)
                failed.result()
            await self._shutdown(loops, hurry)
        finally:
            for slot in self._slots.values():
                await slot.provider.aclose()
            await self.relay.aclose()
            self._session_file.unlock()

    async def _shutdown(self, loops: list[asyncio.Task[None]], hurry: asyncio.Event) -> None:
        """Stop polling, give the tasks in flight their grace (heartbeating), deregister."""
        grace = self.config.relay.shutdown_grace_seconds
        await _cancel(loops[0])
        logger.info(
            "stopping: waiting up to %g s for %d task(s) in flight", grace, len(self._tasks)
        )
        if self._tasks and not hurry.is_set():
            finishing = asyncio.ensure_future(asyncio.wait(set(self._tasks), timeout=grace))
            hurrying = asyncio.ensure_future(hurry.wait())
            await asyncio.wait({finishing, hurrying}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(finishing, hurrying)
        self._waker.cancel_all()
        if not hurry.is_set():
            await _cancel(*self._tasks, *loops)
            await self._deregister()
            return
        # Each step bounded, whatever the relay does: the user asked twice.
        self._give_up_after = HURRY_STEP_SECONDS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HURRY_STEP_SECONDS):
                await _cancel(*self._tasks)
        await _cancel(*self._tasks, *loops)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HURRY_STEP_SECONDS):
                await self._deregister(give_up_after=HURRY_STEP_SECONDS)

    # --- sessions --------------------------------------------------------------------

    async def _initial_statuses(self) -> None:
        async def check(slot: ProviderSlot) -> None:
            up = bool(await slot.up())
            slot.seen_up = up
            if slot.wake_recipe is not None and not up:
                slot.status = LlmStatus.HIBERNATING
                logger.info("%s is asleep: publishing it hibernating", slot.name)
            elif not up:
                slot.status = LlmStatus.UNAVAILABLE
                slot.failed_checks = 1
                logger.warning(
                    "backend of %s is not answering (%s): publishing it unavailable",
                    slot.name,
                    slot.why_down(),
                )

        await asyncio.gather(*(check(slot) for slot in self._slots.values()))

    async def _register(self, *, retry_of_held: bool = False) -> None:
        """Register every provider whose name is free; names another session holds are
        left out (the relay refuses a registration whole) and retried in the background."""
        url = self.config.relay.url
        session_id = self.session_id or self._session_file.load(url)
        if session_id is not None:  # this config registered with this relay before
            self.relay.trust.accepted = True
        backoff = Backoff(cap=self.config.relay.heartbeat_seconds)
        held: dict[str, str] = {}
        while True:
            names = [name for name in self._slots if name not in held]
            request = RegisterRequest(
                providers=[self._slots[name].spec() for name in names],
                provider_session_id=session_id,
            )
            try:
                answer = await retrying(functools.partial(self.relay.register, request))
                break
            except RelayAuthError:
                raise
            except NameHeldError as exc:
                name = _held_name(exc.message, names)
                if name is not None and len(names) > 1:
                    held[name] = exc.message
                    logger.warning(
                        "%s is held by another publisher session (%s): publishing the others; "
                        "retrying it every %g s",
                        name,
                        exc.message,
                        self.config.relay.heartbeat_seconds,
                    )
                    continue
                delay = backoff.next()
                logger.warning(
                    "%s is held by another publisher session (%s); retrying in %.0f s",
                    name or "a name",
                    exc.message,
                    delay,
                )
                await asyncio.sleep(delay)
            except RelayCallError as exc:
                if session_id is None:
                    raise
                logger.warning(
                    "register with session %s refused (%s): new session",
                    fingerprint(session_id),
                    exc.message,
                )
                session_id = None
        self._held = held
        previous = self._server_view
        self._session(answer)
        self._registered_at = time.monotonic()
        self._reported = {name: slot.status for name, slot in self._slots.items()}
        self._session_file.save(url, answer.provider_session_id)
        token = self.config.relay.token.get_secret_value()
        for line in pool_news(answer, token, self._pool_peers):
            logger.info("%s", line)
        listed = ", ".join(f"{row.name} ({row.status})" for row in answer.llms)
        # A retry of held names that changed nothing is not news.
        unchanged = retry_of_held and set(self._server_view) == set(previous)
        logger.log(
            logging.DEBUG if unchanged else logging.INFO,
            "registered session %s: %s",
            fingerprint(answer.provider_session_id),
            listed,
        )

    async def _held_loop(self) -> None:
        """Try the held names again every heartbeat interval, reporting each refusal.

        A registration starts a new generation of the session, and the relay takes a
        claimed task whose lease runs out under an older generation for lost: so the
        retry waits for a moment with no request in flight.
        """
        while True:
            await asyncio.sleep(self.config.relay.heartbeat_seconds)
            if not self._held:
                continue
            await self._no_infer.wait()
            async with self._register_lock:
                await self._register(retry_of_held=True)

    async def _reregister(self) -> None:
        async with self._register_lock:
            if time.monotonic() - self._registered_at < 1.0:
                return
            logger.warning(
                "the relay lost session %s: registering again", fingerprint(self.session_id or "")
            )
            await self._register()

    async def _deregister(self, give_up_after: float = DEREGISTER_SECONDS) -> None:
        if self.session_id is None:
            return
        request = SessionRequest(provider_session_id=self.session_id)
        try:
            await retrying(lambda: self.relay.deregister(request), give_up_after=give_up_after)
        except RelayCallError as exc:
            logger.warning("deregister failed: %s", exc.message)
            return
        logger.info("deregistered session %s", fingerprint(self.session_id or ""))

    def _session(self, answer: SessionResponse) -> None:
        self.session_id = answer.provider_session_id
        self._generation = answer.generation
        self.registrations += 1
        self.announced_doorbell = answer.doorbell_url
        self.heartbeat_timeout = answer.heartbeat_timeout_seconds
        self._server_view = {row.name: row.status for row in answer.llms}

    def _session_id(self) -> str:
        assert self.session_id is not None
        return self.session_id

    # --- heartbeat and statuses ------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        every = self.config.relay.heartbeat_seconds
        beaten = time.monotonic()
        while True:
            # A backend that is down is checked more often, so it is back in seconds.
            down = any(s.status == LlmStatus.UNAVAILABLE for s in self._slots.values())
            await asyncio.sleep(min(every, UNAVAILABLE_RECHECK_SECONDS) if down else every)
            await self._refresh_statuses()
            if self._doorbell is not None and not self._status_changes():
                continue  # its polls are the heartbeat (docs/protocol.md, the doorbell)
            if self._status_changes() or time.monotonic() - beaten >= every * 0.9:
                await self._beat()
                beaten = time.monotonic()

    async def _refresh_statuses(self) -> None:
        async def check(slot: ProviderSlot) -> None:
            transitions, checked_at = slot.transitions, time.monotonic()
            if slot.busy:
                return
            # A backend that just answered a request is up, however slow its model list;
            # a busy one is not asked (None): its requests in flight judge it.
            recent = checked_at - self.config.relay.heartbeat_seconds
            verdict = await slot.up()
            up = verdict is not False or slot.answered_at >= recent
            if slot.busy or slot.transitions != transitions:
                return
            if up != slot.seen_up:
                why = "" if up else f" ({slot.why_down()})"
                logger.info("backend of %s is %s%s", slot.name, "up" if up else "down", why)
                slot.seen_up = up
            slot.failed_checks = 0 if up else slot.failed_checks + 1
            if slot.wake_recipe is not None:
                slot.status = LlmStatus.ACTIVE if up else LlmStatus.HIBERNATING
            elif up:
                slot.status = LlmStatus.ACTIVE
            elif slot.failed_checks >= UNAVAILABLE_AFTER_CHECKS:
                # Twice in a row: one slow answer from a busy backend is not an outage.
                slot.status = LlmStatus.UNAVAILABLE

        await asyncio.gather(*(check(slot) for slot in self._slots.values()))

    def _status_changes(self) -> dict[str, LlmStatus]:
        return {
            name: slot.status
            for name, slot in self._slots.items()
            if name not in self._held
            and (
                self._server_view.get(name) != slot.status
                or self._reported.get(name) != slot.status
            )
        }

    async def _beat(self) -> None:
        """One heartbeat carrying the statuses the relay does not know yet."""
        async with self._beat_lock:
            await self._beat_locked()

    async def _beat_locked(self) -> None:
        statuses = self._status_changes()
        sid, running = self._session_id(), sorted(self._running)
        request = HeartbeatRequest(provider_session_id=sid, statuses=statuses, running=running)
        try:
            answer = await self.relay.heartbeat(request)
        except RelayUnavailableError:
            return
        except SessionLostError:
            await self._reregister()
            return
        self.stop_unwanted(answer.cancelled)
        token = self.config.relay.token.get_secret_value()
        for line in pool_news(answer, token, self._pool_peers):
            logger.info("%s", line)
        if statuses:
            logger.info("reported %s", ", ".join(f"{k} {v}" for k, v in statuses.items()))
        self._reported.update(statuses)
        self._server_view = {row.name: row.status for row in answer.llms}

    async def _beat_quietly(self) -> None:
        try:
            await self._beat()
        except RelayCallError as exc:
            logger.debug("heartbeat failed: %s", exc)

    async def _idle_loop(self) -> None:
        sleepy = [s for s in self._slots.values() if s.config.sleep_after_idle_seconds]
        while True:
            await asyncio.sleep(IDLE_TICK_SECONDS)
            for slot in sleepy:
                idle = slot.config.sleep_after_idle_seconds or 0
                if (
                    slot.status == LlmStatus.ACTIVE
                    and slot.held == 0
                    and not slot.busy
                    and slot.sleeping is None
                    and slot.idle_for() >= idle
                ):
                    slot.sleeping = asyncio.create_task(self._sleep(slot))

    async def _sleep(self, slot: ProviderSlot) -> None:
        try:
            await self._waker.sleep(slot)
        finally:
            slot.sleeping = None

    # --- what the doorbell uses ------------------------------------------------------

    @property
    def generation(self) -> int | None:
        return self._generation

    @property
    def slot_freed(self) -> asyncio.Event:
        return self._slot_freed

    def free_slots(self) -> int:
        return self._free_slots()

    def dispatch(self, task: PolledTask) -> None:
        self._dispatch(task)

    @property
    def running(self) -> list[str]:
        return sorted(self._running)

    def stop_unwanted(self, task_ids: list[str] | None) -> None:
        """Stop the tasks the relay says nobody wants any more (their client went away,
        or the relay ended them): the backend request is aborted, the slot freed."""
        for task in list(self._tasks):
            task_id = task.get_name().removeprefix("task-")
            if task_id in (task_ids or ()) and task_id in self._running:
                self._unwanted.add(task_id)
                task.cancel()

    async def reregister(self) -> None:
        await self._reregister()

    # --- tasks -----------------------------------------------------------------------

    def _free_slots(self) -> int:
        free = sum(slot.free for slot in self._slots.values())
        # An infer waiting for a wake task that is still queued must not block its arrival.
        if self._waker.awaiting_arrival:
            free = max(free, 1)
        return min(free, MAX_TASKS_PER_POLL)

    async def _poll_loop(self) -> None:
        backoff = Backoff()
        wait = self.config.relay.poll_wait_seconds
        while True:
            self._slot_freed.clear()
            free = self._free_slots()
            if free == 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.relay.heartbeat_seconds):
                        await self._slot_freed.wait()
                continue
            # per pool: a member takes no more of a name than its free slots (wakes meant
            # for it come regardless)
            per_name = {
                name: min(slot.free, MAX_TASKS_PER_POLL) for name, slot in self._slots.items()
            }
            full = any(n == 0 for n in per_name.values())
            request = PollRequest(
                provider_session_id=self._session_id(),
                wait_seconds=min(wait, FULL_POLL_SECONDS) if full else wait,
                max_tasks=free,
                generation=self._generation,
                running=sorted(self._running),
                free=per_name,
            )
            sent_at = time.monotonic()
            try:
                answer = await self.relay.poll(request)
            except RelayUnavailableError:
                await asyncio.sleep(backoff.next())
                continue
            except SessionLostError:
                await self._reregister()
                continue
            backoff.reset()
            self.stop_unwanted(answer.cancelled)
            for task in answer.tasks:
                self._dispatch(task)
            if not answer.tasks:
                # A relay that answers an empty poll at once must not make us spin.
                await asyncio.sleep(max(0.0, MIN_EMPTY_POLL_SECONDS - (time.monotonic() - sent_at)))

    def _dispatch(self, task: PolledTask) -> None:
        self._running.add(task.id)
        slot = self._slots.get(task.llm)
        if slot is not None and task.kind == TaskKind.INFER:
            slot.held += 1
            self._no_infer.clear()
        if slot is not None:
            slot.touch()
        running = asyncio.create_task(self._run_task(task, slot), name=f"task-{task.id}")
        self._tasks.add(running)
        running.add_done_callback(self._tasks.discard)

    async def _run_task(self, task: PolledTask, slot: ProviderSlot | None) -> None:
        released = False

        def release() -> None:
            # The backend is done with it: its slot is free for the next poll while the
            # answer is posted (a poll sent meanwhile offers it).
            nonlocal released
            if not released:
                released = True
                if slot is not None and task.kind == TaskKind.INFER:
                    slot.held -= 1
                self._slot_freed.set()

        poster = TaskPoster(self.relay, self._session_id, task.id, on_done=release)
        started = time.monotonic()
        try:
            if slot is None:
                await poster.fail(
                    404, f"this publisher does not serve {task.llm}", ErrorCode.MODEL_NOT_FOUND
                )
            elif task.kind == TaskKind.WAKE:
                await self._run_wake(task, slot, poster)
            else:
                status = await self._run_infer(task, slot, poster)
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
                503, message, ErrorCode.PUBLISHER_OFFLINE, give_up_after=self._give_up_after
            )
            raise
        except Exception as exc:  # never leave a client waiting on a bug of ours
            logger.exception("task %s failed", task.id)
            await poster.fail(500, f"the publisher failed: {exc!r}", ErrorCode.PUBLISHER_ERROR)
        finally:
            self._running.discard(task.id)
            self._unwanted.discard(task.id)
            release()
            if slot is not None:
                slot.touch()
            if not any(s.held for s in self._slots.values()):
                self._no_infer.set()
            self._slot_freed.set()

    async def _run_wake(self, task: PolledTask, slot: ProviderSlot, poster: TaskPoster) -> None:
        outcome = await self._waker.wake(slot, task.id)
        if outcome.ok:
            await poster.result(status=200, body={"ok": True, "ms": outcome.ms})
        else:
            await poster.fail(503, outcome.message, ErrorCode.WAKE_FAILED)

    async def _run_infer(self, task: PolledTask, slot: ProviderSlot, poster: TaskPoster) -> int:
        outcome = await self._waker.before_infer(slot, task.wake_id)
        if outcome is not None and not outcome.ok:
            await poster.fail(503, outcome.message, ErrorCode.WAKE_FAILED)
            return 503
        async with slot.semaphore:
            slot.touch()
            request = task.request
            if request is None and task.request_size > 0:
                try:
                    request = await retrying(
                        lambda: self.relay.task_request(task.id, self._session_id()),
                        give_up_after=60,
                    )
                except (TaskGoneError, RelayUnavailableError) as exc:
                    logger.warning("task %s: cannot fetch its request: %s", task.id, exc)
                    return 502
            if request is None:
                await poster.fail(400, "the task carries no request", ErrorCode.INVALID_REQUEST)
                return 400
            endpoint = slot.endpoint_of(task.endpoint)
            if endpoint is None:
                message = f"{slot.name} does not serve {task.endpoint!r} here"
                await poster.fail(404, message, ErrorCode.ENDPOINT_NOT_SERVED)
                return 404
            with slot.health.request():
                return await run_infer(slot.provider, request, task.stream, poster, endpoint)


def _held_name(message: str, names: list[str]) -> str | None:
    """Which of `names` the relay's 409 refers to: it quotes the name (`'llama3'`)."""
    quoted = [name for name in names if f"'{name}'" in message]
    return quoted[0] if len(quoted) == 1 else None


def _plain_http_elsewhere(url: str) -> bool:
    """http:// to a host that is not this machine."""
    parsed = httpx.URL(url)
    if parsed.scheme != "http" or parsed.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parsed.host).is_loopback
    except ValueError:
        return True


async def _first_of(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> bool:
    """Wait until one of `tasks` ends or `stop` is set; True if a task ended."""
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel(stopping)
    return any(task in done for task in tasks)


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
