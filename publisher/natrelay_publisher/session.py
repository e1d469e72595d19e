"""The publisher's session with the relay: registration, heartbeats, deregistration.

A registration publishes every provider whose name is free; names another live session
holds are left out and tried again every heartbeat interval. Heartbeats carry the
statuses the relay does not know yet and the ids of the tasks in flight (`running`,
which the task runner keeps); a relay that lost the session gets a new registration.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

from natrelay.wire import (
    AgentSpec,
    HeartbeatRequest,
    LlmStatus,
    RegisterRequest,
    SessionRequest,
    SessionResponse,
    fingerprint,
)
from natrelay_publisher.config import RelayConfig
from natrelay_publisher.errors import (
    NameHeldError,
    RelayAuthError,
    RelayCallError,
    RelayUnavailableError,
    SessionLostError,
)
from natrelay_publisher.pools import pool_news
from natrelay_publisher.relay import Backoff, RelayClient, retrying
from natrelay_publisher.session_file import SessionFile
from natrelay_publisher.slots import ProviderSlot

logger = logging.getLogger("natrelay.publisher")

DEREGISTER_SECONDS = 10.0
# A backend that is down is checked this often (not every heartbeat), so it is back in
# seconds.
UNAVAILABLE_RECHECK_SECONDS = 5.0
# A relay that loses the session twice within this long is registered with once.
REREGISTER_AFTER_SECONDS = 1.0


class Session:
    """Registers the providers, heartbeats their statuses, and deregisters them."""

    def __init__(
        self,
        relay: RelayClient,
        config: RelayConfig,
        session_file: SessionFile,
        slots: dict[str, ProviderSlot],
    ) -> None:
        self.relay = relay
        self.config = config
        self.session_file = session_file
        self.slots = slots
        # The agents it publishes with its providers (natrelay_publisher.agents).
        self.agents: list[AgentSpec] = []
        self.id: str | None = None
        self.generation: int | None = None
        # Bumped by each registration: the doorbell binds to a registration, not a process.
        self.registrations = 0
        # What the relay offered at the last registration: its doorbell, its timeout.
        self.announced_doorbell: str | None = None
        self.heartbeat_timeout: float | None = None
        # The ids of the tasks in flight, told to the relay with each heartbeat and poll.
        self.running: set[str] = set()
        self._register_lock = asyncio.Lock()
        # Held by every poll that may claim tasks: a registration takes it, so no task is
        # claimed under the generation of the session it ends (see `register_idle`).
        self.polling = asyncio.Lock()
        self._waiting_to_register = 0
        self._beat_lock = asyncio.Lock()
        self._registered_at = 0.0
        # The statuses the relay holds, and the ones reported to it since registering.
        self._server_view: dict[str, LlmStatus] = {}
        self._reported: dict[str, LlmStatus] = {}
        # Names another live session holds (name -> the relay's refusal): not registered.
        self._held: dict[str, str] = {}
        # How many other live publishers serve each name with us (natrelay_publisher.pools).
        self._pool_peers: dict[str, int] = {}
        # Where the tasks a heartbeat's answer says nobody wants go (the task runner's
        # stop_unwanted: the Publisher wires it).
        self.on_cancelled: Callable[[list[str] | None], None] = lambda task_ids: None

    def require_id(self) -> str:
        """The session id, once registered."""
        assert self.id is not None
        return self.id

    # --- registration ----------------------------------------------------------------

    async def register(self, *, retry_of_held: bool = False) -> None:
        """Register every provider whose name is free; names another session holds are
        left out (the relay refuses a registration whole) and retried by `held_loop`.
        Raises RelayAuthError when the token is refused."""
        url = self.config.url
        session_id = self.id or self.session_file.load(url)
        if session_id is not None:  # this config registered with this relay before
            self.relay.trust.accepted = True
        backoff = Backoff(cap=self.config.heartbeat_seconds)
        held: dict[str, str] = {}
        while True:
            names = [name for name in self.slots if name not in held]
            request = RegisterRequest(
                providers=[self.slots[name].spec() for name in names],
                provider_session_id=session_id,
                agents=self.agents,
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
                        self.config.heartbeat_seconds,
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
        self._registered(answer)
        self._reported = {name: slot.status for name, slot in self.slots.items()}
        self.session_file.save(url, answer.provider_session_id)
        self._pools_said(answer)
        listed = ", ".join(f"{row.name} ({row.status})" for row in answer.llms)
        # A retry of held names that changed nothing is not news.
        unchanged = retry_of_held and set(self._server_view) == set(previous)
        logger.log(
            logging.DEBUG if unchanged else logging.INFO,
            "registered session %s: %s",
            fingerprint(answer.provider_session_id),
            listed,
        )

    def _registered(self, answer: SessionResponse) -> None:
        self.id = answer.provider_session_id
        self.generation = answer.generation
        self.registrations += 1
        self.announced_doorbell = answer.doorbell_url
        self.heartbeat_timeout = answer.heartbeat_timeout_seconds
        self._server_view = {row.name: row.status for row in answer.llms}
        self._registered_at = time.monotonic()

    def _pools_said(self, answer: SessionResponse) -> None:
        """Say when a name is served by others of this key too (or no longer is)."""
        token = self.config.token.get_secret_value()
        for line in pool_news(answer, token, self._pool_peers):
            logger.info("%s", line)

    async def held_loop(self, no_infer: asyncio.Event) -> None:
        """Try the held names again every heartbeat interval, reporting each refusal.

        A registration starts a new generation of the session, and the relay takes a
        claimed task whose lease runs out under an older generation for lost: so the
        retry waits for a moment with no request in flight (`no_infer` set).
        """
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            if self._held:
                await self.register_idle(no_infer)

    async def register_idle(
        self, no_infer: asyncio.Event, slots: dict[str, ProviderSlot] | None = None
    ) -> None:
        """Register again (with `slots` in place of the current ones, if given) at a
        moment when no request runs and no poll is out: the relay takes a task claimed
        under an older generation of the session for lost."""
        self._waiting_to_register += 1
        try:
            while True:
                await no_infer.wait()
                async with self.polling, self._register_lock:
                    if not no_infer.is_set():
                        continue  # a poll brought a request while we waited for it
                    if slots is not None:
                        self.slots.clear()
                        self.slots.update(slots)
                    await self.register(retry_of_held=slots is None)
                    return
        finally:
            self._waiting_to_register -= 1

    def poll_wait(self, wait: float, no_infer: asyncio.Event) -> float:
        """How long a long-poll may wait: not at all while a registration waits for its
        moment (nothing in flight but that poll)."""
        return 0.0 if self._waiting_to_register and no_infer.is_set() else wait

    async def reregister(self) -> None:
        """Register again: the relay lost the session (once, however many noticed)."""
        async with self._register_lock:
            if time.monotonic() - self._registered_at < REREGISTER_AFTER_SECONDS:
                return
            logger.warning(
                "the relay lost session %s: registering again", fingerprint(self.id or "")
            )
            await self.register()

    async def deregister(self, give_up_after: float = DEREGISTER_SECONDS) -> None:
        """Take the providers off the relay (their rows go inactive at once)."""
        if self.id is None:
            return
        request = SessionRequest(provider_session_id=self.id)
        try:
            await retrying(lambda: self.relay.deregister(request), give_up_after=give_up_after)
        except RelayCallError as exc:
            logger.warning("deregister failed: %s", exc.message)
            return
        logger.info("deregistered session %s", fingerprint(self.id or ""))

    # --- heartbeats ------------------------------------------------------------------

    async def heartbeat_loop(self, *, polls_beat: bool) -> None:
        """Check the backends and heartbeat their statuses; with `polls_beat` (the
        doorbell's polls are the heartbeat: docs/protocol.md) only when one changed."""
        every = self.config.heartbeat_seconds
        beaten = time.monotonic()
        while True:
            down = any(s.status == LlmStatus.UNAVAILABLE for s in self.slots.values())
            await asyncio.sleep(min(every, UNAVAILABLE_RECHECK_SECONDS) if down else every)
            await asyncio.gather(*(slot.check(every) for slot in self.slots.values()))
            if polls_beat and not self._status_changes():
                continue
            if self._status_changes() or time.monotonic() - beaten >= every * 0.9:
                await self.beat()
                beaten = time.monotonic()

    def _status_changes(self) -> dict[str, LlmStatus]:
        return {
            name: slot.status
            for name, slot in self.slots.items()
            if name not in self._held
            and (
                self._server_view.get(name) != slot.status
                or self._reported.get(name) != slot.status
            )
        }

    async def beat(self) -> None:
        """One heartbeat carrying the statuses the relay does not know yet."""
        async with self._beat_lock:
            statuses = self._status_changes()
            running = sorted(self.running)
            request = HeartbeatRequest(
                provider_session_id=self.require_id(), statuses=statuses, running=running
            )
            try:
                answer = await self.relay.heartbeat(request)
            except RelayUnavailableError:
                return
            except SessionLostError:
                await self.reregister()
                return
            self.on_cancelled(answer.cancelled)
            self._pools_said(answer)
            if statuses:
                logger.info("reported %s", ", ".join(f"{k} {v}" for k, v in statuses.items()))
            self._reported.update(statuses)
            self._server_view = {row.name: row.status for row in answer.llms}

    async def beat_quietly(self) -> None:
        """A heartbeat whose failure is only logged (a wake's, while it waits)."""
        try:
            await self.beat()
        except RelayCallError as exc:
            logger.debug("heartbeat failed: %s", exc)


def _held_name(message: str, names: list[str]) -> str | None:
    """Which of `names` the relay's 409 refers to: it quotes the name (`'llama3'`)."""
    quoted = [name for name in names if f"'{name}'" in message]
    return quoted[0] if len(quoted) == 1 else None
