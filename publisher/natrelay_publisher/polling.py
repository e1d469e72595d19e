"""Long-polling the relay for tasks (without a doorbell): one poll at a time, asking for
no more than the free slots, none while every slot is busy."""

from __future__ import annotations

import asyncio
import contextlib
import time

from natrelay.wire import PollRequest
from natrelay_publisher.config import RelayConfig
from natrelay_publisher.errors import RelayUnavailableError, SessionLostError
from natrelay_publisher.relay import Backoff
from natrelay_publisher.runner import TaskRunner
from natrelay_publisher.session import Session

# A relay that answers an empty poll at once must not make us spin.
MIN_EMPTY_POLL_SECONDS = 0.5
# While one provider is at its concurrency limit and the others are not, polls wait at
# most this long: the poll declares that provider full, and a slot that frees is offered
# at the next poll (a poll cannot be told of it while it waits).
FULL_POLL_SECONDS = 2.0


async def long_poll(session: Session, runner: TaskRunner, config: RelayConfig) -> None:
    """Poll and start the tasks each poll brings, until cancelled; raises RelayCallError
    when the relay refuses us for good (a refused token, a protocol mismatch)."""
    backoff = Backoff()
    wait = config.poll_wait_seconds
    while True:
        runner.slot_freed.clear()
        free = runner.free_slots()
        if free == 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.heartbeat_seconds):
                    await runner.slot_freed.wait()
            continue
        sent_at = time.monotonic()
        try:
            async with session.polling:  # a registration does not overlap it
                per_name = runner.free_per_name()
                full = any(n == 0 for n in per_name.values())
                request = PollRequest(
                    provider_session_id=session.require_id(),
                    wait_seconds=session.poll_wait(
                        min(wait, FULL_POLL_SECONDS) if full else wait, runner.no_infer
                    ),
                    max_tasks=runner.free_slots(),
                    generation=session.generation,
                    running=sorted(session.running),
                    free=per_name,
                )
                answer = await session.relay.poll(request)
        except RelayUnavailableError:
            await asyncio.sleep(backoff.next())
            continue
        except SessionLostError:
            await session.reregister()
            continue
        backoff.reset()
        runner.stop_unwanted(answer.cancelled)
        for task in answer.tasks:
            runner.dispatch(task)
        if not answer.tasks:
            await asyncio.sleep(max(0.0, MIN_EMPTY_POLL_SECONDS - (time.monotonic() - sent_at)))
