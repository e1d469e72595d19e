"""Wake-on-demand: one wake per burst, learned from the failed condition; failures; expiry."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from natrelay.errors import PublisherOfflineError, WakeFailedError
from natrelay.service import Relay
from natrelay.wire import ErrorInfo, HeartbeatRequest, LlmStatus, TaskKind, TaskResult
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, OpCounter, claim, register, spec

pytestmark = pytest.mark.anyio


async def _sleepy(relay: Relay) -> str:
    return await register(relay, spec("s", LlmStatus.HIBERNATING, wake=30))


async def test_inference_on_a_hibernating_row_queues_one_wake_then_the_inference(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await _sleepy(relay)
    task = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    row = await relay.catalog.get(CLIENT, "s")
    assert row.wake_id == task.wake_id and row.waking(clock.now)
    # deadline = maxWaitSeconds + margin
    assert row.wake_deadline == pytest.approx(clock.now + 30 + relay.settings.wake_margin_seconds)
    polled = await claim(relay, sid)
    assert [(t.kind, t.id) for t in polled] == [
        (TaskKind.WAKE, task.wake_id),
        (TaskKind.INFER, task.id),
    ]
    assert polled[1].wake_id == task.wake_id


async def test_a_burst_shares_one_wake_and_losers_learn_it_without_scanning(
    relay: Relay, client: Any
) -> None:
    sid = await _sleepy(relay)
    first = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    counter = OpCounter(client)
    results = []

    async def one() -> None:
        results.append(await relay.queue.submit(CLIENT, "s", CHAT, stream=False))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert {t.wake_id for t in results} == {first.wake_id}
    # losers learn the wake from the failed condition: no Scan, and no Query (the first
    # request read the pool's queue depth; the burst counts on that reading, which is
    # younger than service.queue_depths.REREAD_SECONDS)
    assert "Scan" not in counter.ops and "Query" not in counter.ops
    kinds = [t.kind for t in await claim(relay, sid, n=32)]
    assert kinds.count(TaskKind.WAKE) == 1 and kinds.count(TaskKind.INFER) == 21


async def test_a_successful_wake_makes_the_row_active(relay: Relay) -> None:
    sid = await _sleepy(relay)
    task = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    await claim(relay, sid)
    await relay.claims.post_result(
        PUB, task.wake_id or "", TaskResult(provider_session_id=sid, body={"ok": True, "ms": 900})
    )
    row = await relay.catalog.get(CLIENT, "s")
    assert row.status is LlmStatus.ACTIVE and row.wake_id is None
    # the next request needs no wake; the session remembers the status for heartbeats
    assert (await relay.queue.submit(CLIENT, "s", CHAT, stream=False)).wake_id is None
    session = await relay.stores.sessions.get(sid)
    assert session is not None and session.statuses["s"] is LlmStatus.ACTIVE


async def test_a_failed_wake_leaves_the_row_hibernating_and_the_next_request_retries(
    relay: Relay,
) -> None:
    sid = await _sleepy(relay)
    task = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    await claim(relay, sid)
    cause = "wake of s failed: POST http://box/wake answered 500"
    await relay.claims.post_result(
        PUB,
        task.wake_id or "",
        TaskResult(
            provider_session_id=sid, status=503, error=ErrorInfo(message=cause, code="wake_failed")
        ),
    )
    # the publisher fails the waiting inference with the wake's cause
    await relay.claims.post_result(
        PUB,
        task.id,
        TaskResult(
            provider_session_id=sid, status=503, error=ErrorInfo(message=cause, code="wake_failed")
        ),
    )
    with pytest.raises(WakeFailedError, match="answered 500") as info:
        await relay.waiting.outcome(await relay.waiting.wait(task.id, budget=5))
    assert info.value.retry_after > 0
    row = await relay.catalog.get(CLIENT, "s")
    assert row.status is LlmStatus.HIBERNATING and row.wake_id is None
    again = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    assert again.wake_id is not None and again.wake_id != task.wake_id


async def test_an_expired_wake_marker_lets_the_next_request_start_a_fresh_wake(
    relay: Relay, clock: FakeClock
) -> None:
    await _sleepy(relay)
    first = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    clock.advance(30 + relay.settings.wake_margin_seconds + 1)
    # keep the session alive: only the wake's publisher-side work vanished
    sid = (await relay.catalog.get(CLIENT, "s")).session_id or ""
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    second = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    assert second.wake_id is not None and second.wake_id != first.wake_id


async def test_a_stale_wake_result_does_not_touch_a_newer_wake(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await _sleepy(relay)
    first = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    await claim(relay, sid)
    clock.advance(60)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    second = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    await relay.claims.post_result(
        PUB, first.wake_id or "", TaskResult(provider_session_id=sid, body={"ok": True})
    )
    row = await relay.catalog.get(CLIENT, "s")
    assert row.wake_id == second.wake_id and row.status is LlmStatus.HIBERNATING


async def test_inactive_rows_never_wake(relay: Relay, clock: FakeClock) -> None:
    await _sleepy(relay)
    clock.advance(100)
    await relay.sweeper.run()
    with pytest.raises(PublisherOfflineError, match="offline"):
        await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    assert (await relay.catalog.get(CLIENT, "s")).wake_id is None


async def test_a_wake_whose_task_cannot_be_written_leaves_no_marker_behind(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await _sleepy(relay)
    put = relay.stores.tasks.put

    async def failing_put(task: Any, *args: Any) -> None:
        if task.kind is TaskKind.WAKE:
            raise RuntimeError("DynamoDB is throttling")
        await put(task, *args)

    monkeypatch.setattr(relay.stores.tasks, "put", failing_put)
    with pytest.raises(RuntimeError):
        await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    assert (await relay.catalog.get(CLIENT, "s")).wake_id is None
    monkeypatch.undo()
    task = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    kinds = [t.kind for t in await claim(relay, sid)]
    assert task.wake_id is not None and kinds == [TaskKind.WAKE, TaskKind.INFER]


async def test_a_heartbeat_read_before_a_wake_finished_does_not_undo_it(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await _sleepy(relay)
    task = await relay.queue.submit(CLIENT, "s", CHAT, stream=False)
    await claim(relay, sid)
    clock.advance(20)
    stale = await relay.stores.sessions.get(sid)  # a poll's refresh reads the session...
    assert stale is not None
    await relay.claims.post_result(  # ...the wake finishes...
        PUB, task.wake_id or "", TaskResult(provider_session_id=sid, body={"ok": True})
    )
    await relay.sessions.beat(stale, {})  # ...and the refresh writes what it read
    assert (await relay.catalog.get(CLIENT, "s")).status is LlmStatus.ACTIVE
    session = await relay.stores.sessions.get(sid)
    assert session is not None and session.statuses["s"] is LlmStatus.ACTIVE
    assert (await relay.queue.submit(CLIENT, "s", CHAT, stream=False)).wake_id is None
    # what the publisher itself reports still counts
    await relay.sessions.heartbeat(
        PUB, HeartbeatRequest(provider_session_id=sid, statuses={"s": LlmStatus.HIBERNATING})
    )
    assert (await relay.catalog.get(CLIENT, "s")).status is LlmStatus.HIBERNATING
