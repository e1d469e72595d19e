"""The doorbell: one outbound WebSocket on which the relay rings when work is queued.

While it is up the publisher holds no long-poll. It polls (without waiting) on a ring,
when a connection opens, and every `safetyPollSeconds`, which is also its heartbeat. It
keeps the connection alive with a `ping` message, and opens the next connection before
it closes the old one (API Gateway ends connections at 2 hours), then polls once: no
ring falls in a gap. When the WebSocket cannot be opened (no such endpoint, a proxy that
refuses WebSockets, a network that drops it) it long-polls as without a doorbell, says
so once, and goes back to the doorbell as soon as it opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from natrelay.wire import (
    DOORBELL_SESSION_HEADER,
    DoorbellMessage,
    DoorbellPing,
    PollRequest,
)
from natrelay_publisher.config import RelayConfig
from natrelay_publisher.errors import PublisherError, RelayUnavailableError, SessionLostError
from natrelay_publisher.relay import Backoff
from natrelay_publisher.runner import TaskRunner
from natrelay_publisher.session import Session

logger = logging.getLogger("natrelay.publisher")

OPEN_TIMEOUT_SECONDS = 10.0
# A connection that does not answer a ping within this long is replaced.
PONG_TIMEOUT_SECONDS = 20.0
# How often the loop looks around when nothing happens (a re-registration, a deadline).
TICK_SECONDS = 5.0
# A poll that returns nothing must not make us spin on a relay that answers at once.
MIN_LONG_POLL_SECONDS = 0.5


class DoorbellUnavailableError(PublisherError):
    """The doorbell's WebSocket could not be opened (the message says why)."""


@dataclass
class _Connection:
    socket: ClientConnection
    opened_at: float
    registration: int
    reader: asyncio.Task[None] | None = field(default=None, repr=False)


class Doorbell:
    """Serves the publisher's tasks by doorbell (long-poll while it is down) until cancelled."""

    def __init__(self, relay: RelayConfig, session: Session, runner: TaskRunner, url: str) -> None:
        self.config = relay.doorbell
        self.session = session
        self.runner = runner
        self.url = url
        self._token = relay.token.get_secret_value()
        self._poll_wait = relay.poll_wait_seconds
        self._events: asyncio.Queue[tuple[str, str | None, _Connection | None]] = asyncio.Queue()
        self._up = asyncio.Event()
        self._slot = asyncio.Event()
        self._falling_back = False
        self._connected_once = False
        self._pending: list[str] = []
        self._more = False
        self._backoff = Backoff()
        # Seen by tests and logs: how many connections were opened, how many rings came.
        self.connections = 0
        self.rings = 0

    @classmethod
    def of(cls, relay: RelayConfig, session: Session, runner: TaskRunner) -> Doorbell | None:
        """The publisher's doorbell, or None: switched off, or neither configured nor
        offered by the relay (then the publisher long-polls, exactly as without one)."""
        url = relay.doorbell.url or session.announced_doorbell
        if not relay.doorbell.enabled or not url:
            return None
        return cls(relay, session, runner, url)

    @property
    def safety_seconds(self) -> float:
        """How often to poll anyway: the safety net, and the heartbeat."""
        timeout = self.session.heartbeat_timeout
        safety = self.config.safety_poll_seconds
        return min(safety, timeout * 2 / 3) if timeout else safety

    async def run(self) -> None:
        fallback: asyncio.Task[None] | None = None
        retry = Backoff(base=1.0, cap=self.config.retry_seconds)
        watcher = asyncio.create_task(self._watch_slots(), name="doorbell-slots")
        try:
            while True:
                try:
                    conn = await self._open()
                except DoorbellUnavailableError as exc:
                    if not self._falling_back:
                        logger.warning(
                            "doorbell unavailable (%s): serving by long-poll, trying the "
                            "doorbell again every %g s at most",
                            exc,
                            self.config.retry_seconds,
                        )
                        self._falling_back = True
                    if fallback is None or fallback.done():
                        fallback = asyncio.create_task(self._long_poll(), name="long-poll")
                    await asyncio.wait({fallback}, timeout=retry.next())
                    if fallback.done() and not self._up.is_set():
                        fallback.result()  # it failed (a refused token): as long_poll would
                    continue
                retry.reset()
                if self._falling_back:
                    logger.info("doorbell up again: back from long-poll")
                    self._falling_back = False
                elif not self._connected_once:
                    logger.info(
                        "doorbell connected: polling on rings, and every %g s",
                        self.safety_seconds,
                    )
                self._connected_once = True
                self._up.set()
                try:
                    await self._serve(conn)
                finally:
                    self._up.clear()
        finally:
            tasks = [t for t in (fallback, watcher) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- connections ---------------------------------------------------------------

    async def _open(self) -> _Connection:
        session_id = self.session.id
        if session_id is None:
            raise DoorbellUnavailableError("no session yet")
        registration = self.session.registrations
        headers = {"Authorization": f"Bearer {self._token}", DOORBELL_SESSION_HEADER: session_id}
        try:
            socket = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=OPEN_TIMEOUT_SECONDS,
                ping_interval=None,  # API Gateway does not answer protocol pings: see _ping
                close_timeout=5,
                max_size=2**16,
            )
        except InvalidStatus as exc:
            raise DoorbellUnavailableError(
                f"{self.url} refused the connection ({exc.response.status_code})"
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise DoorbellUnavailableError(f"{self.url}: {exc!r}") from exc
        conn = _Connection(socket, time.monotonic(), registration)
        conn.reader = asyncio.create_task(self._read(conn), name="doorbell-read")
        self.connections += 1
        return conn

    async def _read(self, conn: _Connection) -> None:
        try:
            async for text in conn.socket:
                try:
                    message = DoorbellMessage.model_validate_json(text)
                except ValidationError:
                    continue
                self._events.put_nowait((message.type, message.task_id, conn))
        except ConnectionClosed:
            pass
        finally:
            self._events.put_nowait(("closed", None, conn))

    async def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.socket.close()
        if conn.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(conn.reader), timeout=6)

    async def _replace(self, conn: _Connection) -> _Connection:
        """Open the next connection, then close this one: rings reach one or the other."""
        try:
            fresh = await self._open()
        except DoorbellUnavailableError as exc:
            logger.debug("doorbell: next connection failed (%s); keeping this one", exc)
            # try again in a while, not at once
            conn.opened_at = time.monotonic() - self.config.max_connection_seconds + TICK_SECONDS
            return conn
        await self._close(conn)
        await self._poll_all()
        return fresh

    async def _serve(self, conn: _Connection) -> None:
        """Until the connection is lost: poll on rings, on time, and when slots free."""
        try:
            await self._poll_all()
            loop = asyncio.get_running_loop()
            next_safety = loop.time() + self.safety_seconds
            next_ping = loop.time() + self.config.keepalive_seconds
            pong_due: float | None = None
            while True:
                now = loop.time()
                if self.session.registrations != conn.registration or (
                    time.monotonic() - conn.opened_at >= self.config.max_connection_seconds
                ):
                    conn = await self._replace(conn)
                    if conn.registration != self.session.registrations:
                        return  # could not bind to the new registration: start over
                    next_safety = loop.time() + self.safety_seconds
                    next_ping = loop.time() + self.config.keepalive_seconds
                    pong_due = None
                    continue
                if pong_due is not None and now >= pong_due:
                    logger.info("doorbell: no answer to a ping; reconnecting")
                    return
                if now >= next_ping:
                    await self._ping(conn)
                    next_ping = now + self.config.keepalive_seconds
                    pong_due = now + PONG_TIMEOUT_SECONDS
                if now >= next_safety:
                    await self._poll_all()
                    next_safety = loop.time() + self.safety_seconds
                if (self._pending or self._more) and self.runner.free_slots() > 0:
                    await self._poll_rung()
                    continue
                deadlines = [next_safety, next_ping, now + TICK_SECONDS]
                if pong_due is not None:
                    deadlines.append(pong_due)
                try:
                    first = await asyncio.wait_for(
                        self._events.get(), max(0.0, min(deadlines) - now)
                    )
                except TimeoutError:
                    continue
                # and every event queued meanwhile: one claim takes all the rings so far
                events = [first, *self._queued()]
                for kind, task_id, _ in events:
                    if kind == "ring" and task_id:
                        self.rings += 1
                        if task_id not in self._pending:
                            self._pending.append(task_id)
                    elif kind == "pong":
                        pong_due = None
                if any(kind == "closed" and source is conn for kind, _, source in events):
                    logger.info("doorbell connection closed; reconnecting")
                    return
        finally:
            await self._close(conn)

    def _queued(self) -> list[tuple[str, str | None, _Connection | None]]:
        """The events waiting in the queue, taken from it."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def _ping(self, conn: _Connection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await conn.socket.send(DoorbellPing().model_dump_json())

    async def _watch_slots(self) -> None:
        while True:
            await self.runner.slot_freed.wait()
            self.runner.slot_freed.clear()
            self._slot.set()
            self._events.put_nowait(("slot", None, None))

    # --- polls ---------------------------------------------------------------------

    async def _poll_rung(self) -> None:
        """Claim what the doorbell rang for, or (after a full poll) whatever is queued.
        More rings than free slots are a backlog: the pool's queue hands it out in its
        own order (classes, then age; the relay's), not in the order the rings came."""
        free = self.runner.free_slots()
        if len(self._pending) > free:
            self._pending = []
        ids, self._pending = self._pending[:free], self._pending[free:]
        if ids:
            await self._poll(0, ids)
        else:
            await self._poll_all()

    async def _poll_all(self) -> None:
        """A poll that does not wait, for whatever is queued (a heartbeat when full)."""
        await self._poll(0, [])

    async def _poll(self, wait: float, ids: list[str]) -> int:
        """One poll; returns how many tasks it brought (-1: the relay was unavailable)."""
        if self.session.id is None:
            return 0
        free = self.runner.free_slots()
        try:
            async with self.session.polling:  # a registration does not overlap it
                request = PollRequest(
                    provider_session_id=self.session.id,
                    wait_seconds=wait,
                    max_tasks=free,
                    generation=self.session.generation,
                    task_ids=ids[:free],
                    running=sorted(self.session.running),
                )
                relay = self.session.relay
                answer = await (relay.poll(request) if wait > 0 else relay.claim(request))
        except RelayUnavailableError:
            self._pending = ids + self._pending
            await asyncio.sleep(self._backoff.next())
            return -1
        except SessionLostError:
            await self.session.reregister()
            return 0
        self._backoff.reset()
        self.runner.stop_unwanted(answer.cancelled)
        for task in answer.tasks:
            self.runner.dispatch(task)
        if not ids:
            self._more = free > 0 and len(answer.tasks) >= free
        return len(answer.tasks)

    async def _long_poll(self) -> None:
        """Today's long-poll, until the doorbell is up (a poll in flight is let finish)."""
        while not self._up.is_set():
            started = time.monotonic()
            self._slot.clear()
            if self.runner.free_slots() == 0:
                # Full: a pure heartbeat now and then, and wait for a free slot.
                await self._poll_all()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), self.safety_seconds)
                continue
            got = await self._poll(
                self.session.poll_wait(self._poll_wait, self.runner.no_infer), []
            )
            if got == 0:
                await asyncio.sleep(max(0.0, MIN_LONG_POLL_SECONDS - (time.monotonic() - started)))
