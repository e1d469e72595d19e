"""Parking (service.local_polls): a request that comes while no poll waits, but a long-polling
member's poll has just answered, goes to that member's next poll in memory; if that poll
does not come, to the pool's queue."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from natrelay.service import Relay, local_polls
from natrelay.settings import Settings
from natrelay.wire import PollRequest, SessionRequest, TaskResult, TaskState
from tests.server.conftest import CHAT, CLIENT, PUB, OpCounter, register, spec
from tests.server.test_fast_path import polling

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # as in test_fast_path: an idle poll re-checks DynamoDB only every few seconds
    return settings.model_copy(
        update={"poll_min_interval_seconds": 5, "poll_max_interval_seconds": 5}
    )


async def stored_state(relay: Relay, task_id: str) -> TaskState | None:
    """The state of the task's item in DynamoDB (None: not written)."""
    stored = await relay.stores.tasks.get(task_id, relay.clock())
    return stored.state if stored is not None else None


async def answered_once(relay: Relay, sid: str) -> None:
    """A long-poll of `sid` that took a task and answered (its publisher polls again)."""
    async with polling(relay, sid) as got:
        first = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        assert [t.id for t in await got()] == [first.id]


async def test_a_request_between_two_polls_goes_to_the_next_poll_in_memory(
    relay: Relay, client: Any
) -> None:
    sid = await register(relay, spec("a"))
    await answered_once(relay, sid)
    counter = OpCounter(client)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert task.state is TaskState.CLAIMED and relay.tasks.holds(task.id)
    assert await stored_state(relay, task.id) is None  # not queued
    counter.ops.clear()
    polled = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=sid, wait_seconds=5, max_tasks=4)
    )
    assert [t.id for t in polled] == [task.id] and polled[0].request is not None
    assert counter.ops == ["GetItem"]  # its session; at once: no Query, no claim
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body={}))
    done = await relay.waiting.wait(task.id, budget=5, fresh=True)
    assert done.state is TaskState.COMPLETED


async def test_no_more_are_parked_than_the_poll_had_free_slots(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    req = PollRequest(provider_session_id=sid, wait_seconds=5, max_tasks=2)
    async with anyio.create_task_group() as tg:
        out: list[Any] = []

        async def poller() -> None:
            out.append(await relay.claims.poll(PUB, req))

        tg.start_soon(poller)
        await anyio.sleep(0.1)
        first = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert [t.id for t in out[0]] == [first.id]
    parked = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)  # its one slot left
    queued = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert relay.tasks.holds(parked.id) and not relay.tasks.holds(queued.id)
    assert await stored_state(relay, queued.id) is TaskState.PENDING


async def test_a_parked_task_whose_poll_does_not_come_goes_back_to_the_queue(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_polls, "PARK_SECONDS", 0.2)
    sid = await register(relay, spec("a"))
    await answered_once(relay, sid)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert relay.tasks.holds(task.id)
    other = await register(relay, spec("a"))  # another member; the first never polls again
    for _ in range(100):
        if await stored_state(relay, task.id) is TaskState.PENDING:
            break
        await anyio.sleep(0.05)
    assert await stored_state(relay, task.id) is TaskState.PENDING
    assert not relay.tasks.holds(task.id)
    polled = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=other, wait_seconds=0, max_tasks=1)
    )
    assert [t.id for t in polled] == [task.id]


async def test_a_poll_that_does_not_wait_parks_nothing(relay: Relay) -> None:
    """A doorbell publisher's claims (wait 0) come only when rung: nothing waits for them."""
    sid = await register(relay, spec("a"))
    assert (
        await relay.claims.poll(
            PUB, PollRequest(provider_session_id=sid, wait_seconds=0, max_tasks=4)
        )
        == []
    )
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert not relay.tasks.holds(task.id)
    assert await stored_state(relay, task.id) is TaskState.PENDING


async def test_a_cancelled_parked_task_is_not_delivered(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    await answered_once(relay, sid)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await relay.endings.cancel(task.id)  # the client went away
    polled = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=sid, wait_seconds=0, max_tasks=4)
    )
    assert polled == []
    await relay.drain()
    assert await stored_state(relay, task.id) is TaskState.CANCELLED


async def test_a_member_that_leaves_hands_its_parked_tasks_back(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    await answered_once(relay, sid)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    assert await stored_state(relay, task.id) is TaskState.PENDING
    assert not relay.tasks.holds(task.id)


async def test_a_member_on_the_doorbell_gets_nothing_parked(relay: Relay) -> None:
    """Its long-poll was the fallback's: once its doorbell is up it polls only when rung,
    so a task parked for it would wait for nothing."""
    sid = await register(relay, spec("a"))
    await answered_once(relay, sid)
    await relay.doorbell.connect(await relay.sessions.get(PUB, sid), "conn-1")
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert not relay.tasks.holds(task.id)
    assert await stored_state(relay, task.id) is TaskState.PENDING
