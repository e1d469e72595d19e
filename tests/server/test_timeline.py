"""Where a request spent its time (service.timeline): the legs of its moments, the
moments its task keeps on both tiers of the task storage (received, asked, first
token) with its trace context, and the row's hour that adds its legs up."""

from __future__ import annotations

import pytest

from natrelay.service import Relay
from natrelay.service.timeline import LEGS, Marks
from natrelay.store import TaskRecord
from natrelay.web import views
from natrelay.wire import ChunkBatch, TaskResult, trace
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, claim, register, spec
from tests.server.test_fast_path import polling

pytestmark = pytest.mark.anyio

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_legs_add_up_to_the_whole_in_order() -> None:
    # a member busy: nobody asked for 3 s, its poll then took 10 ms to claim it
    marks = Marks(received=0.0, queued=0.004, asked=3.004, dispatched=3.014, done=5.0)
    legs = marks.legs()
    assert list(legs) == ["relay", "queue", "dispatch", "backend"]
    assert legs == pytest.approx({"relay": 4, "queue": 3000, "dispatch": 10, "backend": 1986})
    assert sum(legs.values()) == pytest.approx(marks.whole_ms)


def test_a_task_handed_over_during_its_wake_waits_for_the_wake_not_the_backend() -> None:
    # its member claimed it at once and waited for its own wake to end
    marks = Marks(received=0.0, queued=0.01, woke=2.0, dispatched=0.2, first_token=2.3, done=3.0)
    legs = marks.legs()
    assert [leg for leg in LEGS if leg in legs] == list(legs)
    assert legs == pytest.approx(
        {"relay": 10, "wake": 1990, "queue": 0, "dispatch": 0, "backend": 1000}
    )
    assert sum(legs.values()) == pytest.approx(3000)
    # the moments as they happened: the hand-over came before the wake's end
    assert [what for what, _ in marks.steps()] == [
        "received", "queued", "dispatched", "woke", "first token", "done",
    ]  # fmt: skip


def test_a_request_that_no_member_took() -> None:
    legs = Marks(received=0.0, queued=0.01, done=30.01).legs()
    assert legs == pytest.approx({"relay": 10, "queue": 30000})
    assert Marks(received=0.0, queued=0.01).legs() == pytest.approx({"relay": 10})


async def _answer(relay: Relay, clock: FakeClock, sid: str, task: TaskRecord) -> TaskRecord:
    """Stream two chunks, 0.5 s apart from the hand-over, then the result: 2 s in all."""
    for seq in range(2):
        clock.advance(0.5)
        batch = ChunkBatch(provider_session_id=sid, seq=seq, chunks=[{"n": seq}])
        await relay.claims.post_chunks(PUB, task.id, batch)
    clock.advance(1.0)
    result = TaskResult(provider_session_id=sid, chunk_count=2)
    return await relay.claims.post_result(PUB, task.id, result)


async def test_a_queued_task_keeps_its_moments_and_trace(relay: Relay, clock: FakeClock) -> None:
    sid = await register(relay, spec("a"))
    with trace.within(TRACEPARENT):  # the request's span (web.middleware)
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=True)
    assert task.received_at is not None and task.received_at <= task.created_at
    clock.advance(3.0)  # no member asks for 3 s
    [polled] = await claim(relay, sid)
    assert polled.traceparent == TRACEPARENT  # what the publisher is told
    await _answer(relay, clock, sid, task)

    stored = await relay.stores.tasks.get(task.id, clock())  # in DynamoDB
    assert stored is not None and stored.traceparent == TRACEPARENT
    assert stored.asked_at == task.created_at + 3.0 == stored.claimed_at
    assert stored.first_token_at == stored.asked_at + 0.5
    traced = await relay.recent.traced(task.id)
    assert traced is not None
    assert traced.marks.legs() == pytest.approx(
        {"relay": 0, "queue": 3000, "dispatch": 0, "backend": 2000}
    )

    # the row's hour has its times: first token 3.5 s, whole 5 s, and its legs
    await relay.row_stats.flush()
    _, [row] = await relay.history.latency(24)
    hour = row.hours[-1]
    assert hour.requests == 1
    assert hour.first_token[0] == pytest.approx(3500, rel=0.1)
    assert hour.whole[0] == pytest.approx(5000, rel=0.1)
    assert hour.legs == pytest.approx(
        {"relay": 0, "wake": 0, "queue": 3000, "dispatch": 0, "backend": 2000}
    )


async def test_a_task_handed_over_in_memory_keeps_them_too(relay: Relay, clock: FakeClock) -> None:
    sid = await register(relay, spec("a"))
    async with polling(relay, sid) as got:
        with trace.within(TRACEPARENT):
            task = await relay.queue.submit(CLIENT, "a", CHAT, stream=True)
        [handed] = await got()
    assert handed.id == task.id and views.polled_task(handed).traceparent == TRACEPARENT
    await _answer(relay, clock, sid, task)
    await relay.drain()  # its record, written behind its answer
    stored = await relay.stores.tasks.get(task.id, clock())
    assert stored is not None and stored.traceparent == TRACEPARENT
    assert stored.received_at is not None and stored.first_token_at == stored.claimed_at + 0.5
