"""Leases of claimed tasks: a publisher that confirms what it runs (`running` in its polls
and heartbeats) gets back what it does not run within about a lease, not 15 minutes."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import httpx
import pytest

from natrelay.service import Relay
from natrelay.service.assembly import Assembly
from natrelay.settings import Settings
from natrelay.store import Stores
from natrelay.wire import HeartbeatRequest, PollRequest, TaskState
from natrelay_infra.moto_server import MotoProcess
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, claim, register, spec
from tests.support.scripted import ScriptedPublisher, echo_answer
from tests.support.stack import dynamodb_client, running_stack

ECHO = [{"name": "echo", "type": "echo", "model": "echo"}]
MSG = [{"role": "user", "content": "the quick brown fox"}]


async def _poll(relay: Relay, sid: str, running: list[str] | None) -> list[str]:
    polled = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=sid, wait_seconds=0, max_tasks=4, running=running)
    )
    return [t.id for t in polled]


@pytest.mark.anyio
async def test_a_claimed_task_the_publisher_does_not_confirm_is_handed_out_again(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert await _poll(relay, sid, running=[]) == [task.id]  # ...and the answer is lost
    lease = relay.settings.lease_seconds
    clock.advance(lease / 2 + 1)
    assert await _poll(relay, sid, running=[]) == []  # the publisher runs nothing
    clock.advance(lease / 2)
    assert (await relay.sweeper.run())["requeued"] == 1
    assert await _poll(relay, sid, running=[]) == [task.id]  # the second claim arrives
    for _ in range(3):  # now it runs it and says so: the lease is kept
        clock.advance(lease / 2 + 1)
        await relay.sessions.heartbeat(
            PUB, HeartbeatRequest(provider_session_id=sid, running=[task.id])
        )
        await relay.sweeper.run()
    assert (await relay.waiting.get(task.id)).state is TaskState.CLAIMED
    clock.advance(lease / 2 + 1)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid, running=[]))
    clock.advance(lease)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid, running=[]))
    assert (await relay.sweeper.run())["requeued"] == 1


@pytest.mark.anyio
async def test_a_publisher_that_confirms_nothing_keeps_the_old_leases(
    relay: Relay, clock: FakeClock
) -> None:
    """An older publisher sends no `running`: its leases are extended while it lives."""
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)
    for _ in range(3):
        clock.advance(relay.settings.lease_seconds + 1)
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
        assert (await relay.sweeper.run())["extended"] == 1
    assert (await relay.waiting.get(task.id)).state is TaskState.CLAIMED


class LosingPublisher(ScriptedPublisher):
    """Loses the poll answer of each task once (never runs it), keeps polling and says
    what it runs; runs the task when it is handed out again."""

    running: set[str]
    lost: set[str]

    def poll_once(self, wait: float = 1.0, max_tasks: int = 8) -> list[dict[str, Any]]:
        resp = self.post(
            "_provider-poll",
            {
                "providerSessionId": self.session_id,
                "waitSeconds": wait,
                "maxTasks": max_tasks,
                "running": sorted(self.running),
            },
        )
        resp.raise_for_status()
        tasks: list[dict[str, Any]] = resp.json()["tasks"]
        fresh = [t for t in tasks if t["id"] in self.lost]
        self.lost.update(t["id"] for t in tasks)
        self.running.update(t["id"] for t in fresh)
        return fresh


def _answer(task: dict[str, Any], pub: ScriptedPublisher) -> None:
    echo_answer(task, pub)
    assert isinstance(pub, LosingPublisher)
    pub.running.discard(task["id"])


def test_a_poll_answer_lost_on_the_way_is_handed_out_again_within_a_lease(
    moto_server: MotoProcess,
) -> None:
    settings = {"heartbeat_timeout_seconds": 4, "lease_seconds": 2, "request_timeout_seconds": 20}
    with running_stack(moto_server.endpoint, **settings) as stack:
        stores = Stores.on(
            dynamodb_client(moto_server.endpoint),
            stack.tables.llms,
            stack.tables.tasks,
            stack.tables.keys,
        )
        sweeper = Assembly(Settings(**settings), stores=stores).sweeper
        stop = threading.Event()

        def sweep() -> None:  # the scheduled sweep, every half second
            while not stop.wait(0.5):
                anyio.run(sweeper.run)

        pub = LosingPublisher(stack.url, stack.publish_token, ECHO, answer=_answer)
        pub.running, pub.lost = set(), set()
        sweeping = threading.Thread(target=sweep, daemon=True)
        sweeping.start()
        try:
            with pub:
                started = time.monotonic()
                resp = httpx.post(
                    f"{stack.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {stack.client_token}"},
                    json={"model": "echo", "messages": MSG},
                    timeout=30,
                )
                took = time.monotonic() - started
        finally:
            stop.set()
            sweeping.join(timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == "the quick brown fox"
        assert took < 8, f"the lost task held the client {took:.1f} s"
