"""The pool's queue order holds on the fast path too: a request handed at once to a poll
of this process never passes requests already waiting in the queue, and what a poll is
told of is tried in queue order with what the index lists."""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from natrelay.service import Relay
from natrelay.service.dispatch import in_queue_order
from natrelay.service.endings import PoolHint
from natrelay.settings import Settings
from natrelay.store import Queued, TaskRecord
from natrelay.wire import PollRequest, Priority, TaskState
from tests.server.conftest import CHAT, CLIENT, PUB, register, spec

BATCH = replace(CLIENT, priority=Priority.BATCH)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # an idle poll re-checks DynamoDB only every few seconds (as in test_fast_path)
    return settings.model_copy(
        update={"poll_min_interval_seconds": 5, "poll_max_interval_seconds": 5}
    )


async def stored_state(relay: Relay, task_id: str) -> TaskState | None:
    stored = await relay.stores.tasks.get(task_id, relay.clock())
    return stored.state if stored is not None else None


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
