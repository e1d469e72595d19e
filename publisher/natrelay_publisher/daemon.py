"""The publisher daemon: its parts built from the config, started, and shut down.

The parts, one job each: `Session` (register, heartbeat, deregister), `TaskRunner`
(run the tasks and post their answers), `long_poll` or `Doorbell` (bring the tasks),
`Waker` (wakes and idle sleeps). `Publisher.run` starts them once registered and, on
the stop signal, gives the tasks in flight their grace before deregistering.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

import httpx

from natrelay.wire.trace import Tracing
from natrelay_publisher.catalog import Catalog
from natrelay_publisher.config import ProviderConfig, PublisherConfig
from natrelay_publisher.doorbell import Doorbell
from natrelay_publisher.polling import long_poll
from natrelay_publisher.relay import RelayClient
from natrelay_publisher.runner import TaskRunner
from natrelay_publisher.session import Session
from natrelay_publisher.session_file import SessionFile
from natrelay_publisher.slots import ProviderSlot
from natrelay_publisher.wake import Waker

logger = logging.getLogger("natrelay.publisher")

REGISTER_GRACE_SECONDS = 3.0
# After a second Ctrl-C: failing the tasks in flight, then deregistering, each this long.
HURRY_STEP_SECONDS = 2.0


class Publisher:
    """Publishes the configured providers to the relay until `stop` is set."""

    def __init__(
        self,
        config: PublisherConfig,
        *,
        relay_transport: httpx.AsyncBaseTransport | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.config = config
        # Where the providers come from when they may change while it runs (`--detect`,
        # `--backend`): listed again every `catalog.every` s, and published as they change.
        self.catalog = catalog
        token = config.relay.token.get_secret_value()
        self.relay = RelayClient(config.relay.url, token, transport=relay_transport)
        self.session_file = SessionFile(config.session_file)
        self.slots: dict[str, ProviderSlot] = {}
        self.session = Session(self.relay, config.relay, self.session_file, self.slots)
        self.session.agents = [agent.spec() for agent in config.agents]
        self.waker = Waker(self.session.beat_quietly)
        self.tracing = Tracing("natrelay-publisher", export=config.tracing == "otlp")
        self.runner = TaskRunner(self.relay, self.slots, self.waker, self.session, self.tracing)
        # A heartbeat's answer may name tasks nobody wants any more: the runner stops them.
        self.session.on_cancelled = self.runner.stop_unwanted

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set; raises RelayAuthError when the token is refused,
        SessionFileBusyError when another process uses the session file.

        Once stopping, `hurry` (a second Ctrl-C) cuts the grace short: the tasks in
        flight are failed and the session deregistered within a few seconds.
        """
        hurry = hurry or asyncio.Event()
        try:
            self.session_file.lock()
            logger.info("session file %s", self.session_file.path)
            if _plain_http_elsewhere(self.config.relay.url):
                logger.warning(
                    "relay.url %s is plain http: the publish token and every prompt and answer "
                    "cross the network unencrypted; use https://",
                    self.config.relay.url,
                )
            self.slots.update(self._slots(self.config.published))
            await asyncio.gather(*(slot.check_first() for slot in self.slots.values()))
            if not await self._register(stop):
                return
            loops = self._start()
            if await _first_of(loops, stop):
                # The loops only end by an error (a refused token, a protocol mismatch).
                failed = next(loop for loop in loops if loop.done())
                await _cancel(*loops, *self.runner.tasks)
                failed.result()
            await self._shutdown(loops, hurry)
        finally:
            for slot in self.slots.values():
                await slot.provider.aclose()
            await self.relay.aclose()
            self.session_file.unlock()
            self.tracing.flush()  # the spans not exported yet (tracing: otlp)

    def _slots(self, configs: Iterable[ProviderConfig]) -> dict[str, ProviderSlot]:
        """A slot for each of `configs`. Providers of the same server (base URL) share its
        load, with each other and with the slots there are (natrelay_publisher.health)."""
        loads = {s.config.base_url: s.load for s in self.slots.values() if s.config.base_url}
        made: dict[str, ProviderSlot] = {}
        for config in configs:
            url = config.base_url or ""
            slot = ProviderSlot.build(
                config, heartbeat_seconds=self.config.relay.heartbeat_seconds, load=loads.get(url)
            )
            if url:
                loads.setdefault(url, slot.load)
            made[config.name] = slot
        return made

    async def _register(self, stop: asyncio.Event) -> bool:
        """Register (retrying while the relay is unreachable); False if `stop` came first."""
        registering = asyncio.create_task(self.session.register(), name="register")
        if await _first_of([registering], stop):
            registering.result()
            return True
        # A registration in flight may land yet: then it must be undone. One that is only
        # waiting to try again can go at once.
        if self.relay.in_flight:
            await asyncio.wait({registering}, timeout=REGISTER_GRACE_SECONDS)
        await _cancel(registering)
        await self.session.deregister()
        return False

    def _start(self) -> list[asyncio.Task[None]]:
        """The loops that serve, the one that brings the tasks first."""
        relay = self.config.relay
        doorbell = Doorbell.of(relay, self.session, self.runner)
        polling = doorbell.run() if doorbell else long_poll(self.session, self.runner, relay)
        loops = [
            asyncio.create_task(polling, name="poll"),
            asyncio.create_task(
                self.session.heartbeat_loop(polls_beat=doorbell is not None), name="heartbeat"
            ),
            asyncio.create_task(self.session.held_loop(self.runner.no_infer), name="held"),
            asyncio.create_task(self.session.work_loop(), name="work"),
        ]
        if self.catalog is not None and self.catalog.every:
            loops.append(asyncio.create_task(self._follow(self.catalog), name="catalog"))
        if any(slot.config.sleep_after_idle_seconds for slot in self.slots.values()):
            idle = self.waker.idle_loop(list(self.slots.values()))
            loops.append(asyncio.create_task(idle, name="idle"))
        return loops

    async def _follow(self, catalog: Catalog) -> None:
        """Publish what the catalog lists, as it changes."""
        while True:
            await asyncio.sleep(catalog.every)
            busy = {s.config.base_url or "" for s in self.slots.values() if s.health.busy}
            await self.apply(await catalog.providers(busy))

    async def apply(self, providers: list[ProviderConfig]) -> None:
        """Publish `providers` in place of the current ones: new names are registered,
        names no longer listed unpublished, under the same session."""
        wanted = {config.name: config for config in providers if config.publish}
        kept = {n: s for n, s in self.slots.items() if wanted.get(n) == s.config}
        if not wanted or kept.keys() == wanted.keys() == self.slots.keys():
            return
        added = self._slots(c for n, c in wanted.items() if n not in kept)
        await asyncio.gather(*(slot.check_first() for slot in added.values()))
        gone = [slot for name, slot in self.slots.items() if kept.get(name) is not slot]
        try:
            await self.session.register_idle(
                self.runner.no_infer, {n: kept.get(n) or added[n] for n in wanted}
            )
        finally:  # what is not in use (any more, or yet: a stop came first) is closed
            for slot in [*gone, *added.values()]:
                if slot not in self.slots.values():
                    await slot.provider.aclose()

    async def _shutdown(self, loops: list[asyncio.Task[None]], hurry: asyncio.Event) -> None:
        """Stop polling, give the tasks in flight their grace (heartbeating), deregister."""
        tasks = self.runner.tasks
        grace = self.config.relay.shutdown_grace_seconds
        # No new tasks, and no new providers: a registration now would be undone at once.
        await _cancel(*(loop for loop in loops if loop.get_name() in ("poll", "catalog")))
        logger.info("stopping: waiting up to %g s for %d task(s) in flight", grace, len(tasks))
        if tasks and not hurry.is_set():
            finishing = asyncio.ensure_future(asyncio.wait(set(tasks), timeout=grace))
            hurrying = asyncio.ensure_future(hurry.wait())
            await asyncio.wait({finishing, hurrying}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(finishing, hurrying)
        self.waker.cancel_all()
        if not hurry.is_set():
            await _cancel(*tasks, *loops)
            await self.session.deregister()
            return
        # Each step bounded, whatever the relay does: the user asked twice.
        self.runner.give_up_after = HURRY_STEP_SECONDS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HURRY_STEP_SECONDS):
                await _cancel(*tasks)
        await _cancel(*tasks, *loops)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HURRY_STEP_SECONDS):
                await self.session.deregister(give_up_after=HURRY_STEP_SECONDS)


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
