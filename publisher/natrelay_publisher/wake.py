"""Wakes and sleeps: one at a time per provider, outcomes remembered by wake id; idle
providers with a sleep recipe put to sleep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from natrelay.wire import LlmStatus
from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes import WakeRecipe
from natrelay_publisher.redact import describe, redact
from natrelay_publisher.slots import ProviderSlot
from natrelay_publisher.types import Heartbeat

logger = logging.getLogger("natrelay.publisher")

TICK_SECONDS = 1.5
# How often idle providers are looked for.
IDLE_TICK_SECONDS = 1.0
# How much longer than the recipe's maxWaitSeconds an infer waits for a wake task to show up.
WAKE_ARRIVAL_MARGIN_SECONDS = 30.0
REMEMBER_SECONDS = 900.0


@dataclass(frozen=True)
class WakeOutcome:
    ok: bool
    ms: int
    message: str = ""


class Waker:
    """Runs wake recipes (joining a wake already running) and the idle sleep."""

    def __init__(self, heartbeat: Heartbeat, *, tick_seconds: float = TICK_SECONDS) -> None:
        self._heartbeat = heartbeat
        self._tick = tick_seconds
        self._running: dict[str, asyncio.Task[WakeOutcome]] = {}
        self._outcomes: dict[str, tuple[float, asyncio.Future[WakeOutcome]]] = {}
        # Infer tasks waiting for a wake task that has not arrived yet.
        self.awaiting_arrival = 0

    async def wake(self, slot: ProviderSlot, wake_id: str) -> WakeOutcome:
        """Wake `slot` (or join its running wake) and remember the outcome under `wake_id`."""
        running = self._running.get(slot.name)
        if running is None:
            running = asyncio.create_task(self._wake(slot), name=f"wake-{slot.name}")
            self._running[slot.name] = running
            running.add_done_callback(lambda _: self._running.pop(slot.name, None))
        outcome = await asyncio.shield(running)
        future = self._future(wake_id)
        if not future.done():
            future.set_result(outcome)
        return outcome

    async def before_infer(self, slot: ProviderSlot, wake_id: str | None) -> WakeOutcome | None:
        """Wait for the wake an infer task depends on; None when there is none to wait for."""
        if slot.sleeping is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(slot.sleeping)
        if wake_id is not None and wake_id in self._outcomes:
            future = self._outcomes[wake_id][1]
            if future.done():
                return future.result()
        running = self._running.get(slot.name)
        if running is not None:
            return await asyncio.shield(running)
        if slot.wake_recipe is None:
            return None
        if wake_id is not None and await slot.ready():
            return None  # already up: whatever that wake says, the request can run now
        if wake_id is not None:
            timeout = slot.wake_recipe.max_wait_seconds + WAKE_ARRIVAL_MARGIN_SECONDS
            self.awaiting_arrival += 1
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(self._future(wake_id))
            except TimeoutError:
                logger.warning("wake %s of %s never arrived; going on", wake_id, slot.name)
            finally:
                self.awaiting_arrival -= 1
        if slot.status == LlmStatus.HIBERNATING:
            return await self.wake(slot, f"local-{uuid.uuid4().hex[:12]}")
        return None

    async def sleep(self, slot: ProviderSlot) -> None:
        """Run the sleep recipe of an idle provider; it becomes hibernating."""
        recipe = slot.sleep_recipe
        if recipe is None:
            return
        async with slot.lock:
            if slot.held or slot.status != LlmStatus.ACTIVE:
                return
            logger.info("%s idle for %.0f s: putting it to sleep", slot.name, slot.idle_for())
            try:
                async with asyncio.timeout(recipe.max_wait_seconds):
                    await recipe.run("sleep")
            except Exception as exc:  # a failed sleep leaves the backend up: log and go on
                cause = (
                    "timed out" if isinstance(exc, TimeoutError) else redact(str(exc) or repr(exc))
                )
                logger.warning("sleep of %s failed: %s", slot.name, cause)
                slot.touch()
                return
            slot.status = LlmStatus.HIBERNATING
            slot.seen_up = False
            slot.transitions += 1
            logger.info("%s is asleep", slot.name)
        await self._heartbeat()

    async def idle_loop(self, slots: list[ProviderSlot]) -> None:
        """Put each of `slots` to sleep once it has been idle its `sleepAfterIdleSeconds`."""
        sleepy = [slot for slot in slots if slot.config.sleep_after_idle_seconds]
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
                    slot.sleeping = asyncio.create_task(self._sleep_idle(slot))

    async def _sleep_idle(self, slot: ProviderSlot) -> None:
        try:
            await self.sleep(slot)
        finally:
            slot.sleeping = None

    def cancel_all(self) -> None:
        for task in list(self._running.values()):
            task.cancel()

    def _future(self, wake_id: str) -> asyncio.Future[WakeOutcome]:
        now = time.monotonic()
        for key, (stamp, future) in list(self._outcomes.items()):
            if now - stamp > REMEMBER_SECONDS:
                del self._outcomes[key]
                future.cancel()
        if wake_id not in self._outcomes:
            self._outcomes[wake_id] = (now, asyncio.get_running_loop().create_future())
        return self._outcomes[wake_id][1]

    async def _wake(self, slot: ProviderSlot) -> WakeOutcome:
        started = time.monotonic()
        recipe = slot.wake_recipe
        if recipe is None:
            return WakeOutcome(False, 0, f"wake of {slot.name} failed: it has no wake recipe")
        async with slot.lock:
            try:
                if not await slot.ready():
                    logger.info("waking %s (%s recipe)", slot.name, recipe.type_name)
                    await self._run(slot, recipe, started)
            except Exception as exc:  # a plugin's bug fails this wake, not the publisher
                ms = int((time.monotonic() - started) * 1000)
                cause = str(exc) if isinstance(exc, RecipeError) else describe(exc)
                message = redact(f"wake of {slot.name} failed: {cause}")
                logger.warning("%s", message)
                return WakeOutcome(False, ms, message)
            slot.status = LlmStatus.ACTIVE
            slot.seen_up = True
            slot.transitions += 1
            slot.touch()
        ms = int((time.monotonic() - started) * 1000)
        logger.info("%s is awake (%d ms)", slot.name, ms)
        # no heartbeat here: the wake's result, posted next, makes the row active, and the
        # requests waiting on this wake should not wait for a heartbeat round trip first
        return WakeOutcome(True, ms)

    async def _run(self, slot: ProviderSlot, recipe: WakeRecipe, started: float) -> None:
        max_wait = recipe.max_wait_seconds
        try:
            async with asyncio.timeout(max_wait):
                await recipe.run("wake")
        except TimeoutError:
            raise RecipeError(
                f"the {recipe.type_name} recipe did not finish within {max_wait:g} s"
            ) from None
        while not await slot.ready():
            if time.monotonic() - started > max_wait:
                raise RecipeError(f"{slot.name} did not answer within {max_wait:g} s")
            await self._heartbeat()
            await asyncio.sleep(self._tick)
