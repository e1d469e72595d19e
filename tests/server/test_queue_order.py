"""The pool's queue order holds on the fast path too: a request handed at once to a poll
of this process never passes requests already waiting in the queue, and what a poll is
told of is tried in queue order with what the index lists. A request reads its pool's
queue depth at most once a second (service.queue_depths), and again near the limit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest

from natrelay.errors import QueueFullError
from natrelay.service import Relay
from natrelay.service.dispatch import in_queue_order
from natrelay.service.endings import PoolHint
from natrelay.service.queue_depths import REREAD_SECONDS
from natrelay.store import Queued, TaskRecord
from natrelay.wire import PollRequest, Priority, TaskState
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, OpCounter, register, spec
from tests.server.test_fast_path import polling

# an idle poll re-checks DynamoDB only every few seconds (test_parking's settings)
from tests.server.test_parking import settings, stored_state  # noqa: F401

BATCH = replace(CLIENT, priority=Priority.BATCH)


@pytest.mark.anyio
async def test_a_request_does_not_pass_the_queue_while_a_poll_reads_it(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that reads the queue is on offer meanwhile (a request may be handed to it);
    with requests waiting in the queue, a new one goes behind them, not to that poll."""
    sid = await register(relay, spec("a"))
    waiting = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)  # no poll: queued
    assert await stored_state(relay, waiting.id) is TaskState.PENDING

    queues = relay.claims.empty.queues
    real_pending = queues.pending
    reading, go_on = anyio.Event(), anyio.Event()

    async def held_pending(name: str, limit: int) -> list[Queued]:
        if not reading.is_set():  # the poll's read (the first): held
            reading.set()
            await go_on.wait()
        return await real_pending(name, limit)

    monkeypatch.setattr(queues, "pending", held_pending)
    polled: list[list[TaskRecord]] = []
    later: list[TaskRecord] = []

    async def poll() -> None:
        req = PollRequest(provider_session_id=sid, wait_seconds=5, max_tasks=1)
        polled.append(await relay.claims.poll(PUB, req))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        with anyio.fail_after(10):
            await reading.wait()  # the poll is reading the queue's index now
        later.append(await relay.queue.submit(BATCH, "a", CHAT, stream=False))
        go_on.set()
    assert [t.id for t in polled[0]] == [waiting.id]
    assert await stored_state(relay, later[0].id) is TaskState.PENDING


def hint(task_id: str, order: float | None, target: str | None = None) -> PoolHint:
    return PoolHint(task_id, "a", target_session=target, order=order)


def test_tasks_told_of_are_tried_in_queue_order_with_the_listed_ones() -> None:
    listed = [hint("wake", 1.0, target="s"), hint("old", 5.0), hint("batch", 69.0)]
    told = [
        hint("batch", None),  # listed already: its listed order counts
        hint("new", 10.0),
        hint("requeued", None),  # no order known: first, as the index sorts requeues
    ]
    assert [h.task_id for h in in_queue_order(listed, told)] == [
        "requeued",
        "wake",
        "old",
        "new",
        "batch",
    ]
    assert in_queue_order(listed, []) == listed
    assert [h.task_id for h in in_queue_order([], told[1:])] == ["requeued", "new"]


@pytest.mark.anyio
async def test_a_backlog_is_counted_once_a_second_and_exactly_at_its_limit(
    client: Any, relay: Relay, clock: FakeClock
) -> None:
    """Under overload every request would read the whole queue to count it: the depth
    read is once per REREAD_SECONDS, plus what this process queued since, and again
    whenever that estimate reaches the limit (so the limit still holds here)."""
    relay.settings.max_queue_depth = 6
    await register(relay, spec("a"))  # a member that never polls: everything queues
    counter = OpCounter(client)
    for _ in range(4):
        await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert counter.count("Query") == 1  # the first request's reading, for all four
    clock.advance(REREAD_SECONDS)
    await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert counter.count("Query") == 2  # a second later: read again (5 wait now)
    await relay.queue.submit(CLIENT, "a", CHAT, stream=False)  # the sixth
    with pytest.raises(QueueFullError):
        await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert counter.count("Query") == 3  # at the limit: counted exactly


@pytest.mark.anyio
async def test_once_a_backlog_drains_a_request_is_handed_at_once_again(relay: Relay) -> None:
    """This process's reading says two wait, but a poll has taken them since: the next
    request, with a poll free here, is handed to it at once (not queued on the reading's
    word)."""
    sid = await register(relay, spec("a"))
    queued = [await relay.queue.submit(CLIENT, "a", CHAT, stream=False) for _ in range(2)]
    drained = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=sid, wait_seconds=0, max_tasks=4)
    )
    assert {t.id for t in drained} == {t.id for t in queued}
    async with polling(relay, sid) as got:
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        assert task.state is TaskState.CLAIMED and relay.tasks.holds(task.id)
        assert [t.id for t in await got()] == [task.id]
