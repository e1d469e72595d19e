"""Rings that come while a claim is on its way are claimed together, in the next claim:
one claim per ring would make the publisher's dispatch as slow as its claims in a row
under load (every Lambda-mode request waits for its ring's claim)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from natrelay.wire import PolledTask, PollRequest, PollResponse
from natrelay_publisher.config import RelayConfig
from natrelay_publisher.doorbell import Doorbell


class SlowRelay:
    """Claims that answer nothing; the first claim naming a task waits for `release`."""

    def __init__(self) -> None:
        self.claims: list[list[str]] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def claim(self, request: PollRequest) -> PollResponse:
        self.claims.append(list(request.task_ids))
        if request.task_ids and not self.release.is_set():
            self.holding.set()
            await self.release.wait()
        return PollResponse(tasks=[])


class Session:
    """What the doorbell reads of the publisher's session (natrelay_publisher.session)."""

    def __init__(self, relay: SlowRelay) -> None:
        self.relay: Any = relay
        self.id: str | None = "s" * 32
        self.registrations = 1
        self.heartbeat_timeout: float | None = None
        self.announced_doorbell: str | None = None
        self.generation: int | None = 1
        self.running: set[str] = set()
        # Held by every poll: a registration waits for it.
        self.polling = asyncio.Lock()

    def poll_wait(self, wait: float, no_infer: asyncio.Event) -> float:
        return wait

    async def reregister(self) -> None:
        raise AssertionError("the session was not lost")


class Runner:
    """What the doorbell asks of the task runner (natrelay_publisher.runner)."""

    def __init__(self) -> None:
        self.slot_freed = asyncio.Event()

    def free_slots(self) -> int:
        return 32

    def dispatch(self, task: PolledTask) -> None:
        raise AssertionError("no task was handed out")

    def stop_unwanted(self, task_ids: list[str] | None) -> None:
        assert not task_ids, "nothing runs, so nothing is cancelled"


def ring(task_id: str) -> str:
    return json.dumps({"type": "ring", "taskId": task_id})


async def wait_for(check: Any, what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not {what} within 10 s") from None


@asynccontextmanager
async def ringing(
    relay: SlowRelay, runner: Runner
) -> AsyncIterator[tuple[Doorbell, list[ServerConnection]]]:
    """A doorbell running against a WebSocket server of this test, connected and polled
    once; the server's side of its connection is in the list."""
    sockets: list[ServerConnection] = []

    async def accept(socket: ServerConnection) -> None:
        sockets.append(socket)
        await socket.wait_closed()

    async with serve(accept, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = RelayConfig.model_validate({"url": "http://127.0.0.1:9", "token": "token"})
        bell = Doorbell(config, Session(relay), runner, f"ws://127.0.0.1:{port}")
        running = asyncio.create_task(bell.run())
        try:
            await wait_for(lambda: sockets and relay.claims, "connected and polled")
            yield bell, sockets
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


def test_rings_during_a_claim_go_out_in_one_claim() -> None:
    asyncio.run(rings_during_a_claim())


async def rings_during_a_claim() -> None:
    relay = SlowRelay()
    async with ringing(relay, Runner()) as (bell, sockets):
        await sockets[0].send(ring("t1"))
        await asyncio.wait_for(relay.holding.wait(), 10)  # t1's claim is on its way
        for i in range(2, 7):
            await sockets[0].send(ring(f"t{i}"))
        await wait_for(lambda: bell._events.qsize() == 5, "rings read")
        relay.release.set()
        await wait_for(lambda: len(relay.claims) == 3, "the next claim")
        assert relay.claims == [[], ["t1"], ["t2", "t3", "t4", "t5", "t6"]]
        assert bell.rings == 6


class FullRunner(Runner):
    """A runner whose slots are all busy until `free` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.free = 0

    def free_slots(self) -> int:
        return self.free


def test_rings_heard_while_full_are_left_to_the_queues_order() -> None:
    """More rings than free slots are a backlog: the freed slot claims what the relay's
    queue hands out first (an interactive request before batch work rung earlier), not
    the first ring."""
    asyncio.run(rings_while_full())


async def rings_while_full() -> None:
    relay, runner = SlowRelay(), FullRunner()
    relay.release.set()
    async with ringing(relay, runner) as (bell, sockets):
        for i in range(1, 4):
            await sockets[0].send(ring(f"t{i}"))
        await wait_for(lambda: bell.rings == 3, "rings read")
        assert len(relay.claims) == 1  # full: nothing claimed for them yet
        runner.free = 1
        runner.slot_freed.set()
        await wait_for(lambda: len(relay.claims) >= 2, "the freed slot's claim")
        assert relay.claims[1] == []  # the queue's order, not t1's ring
