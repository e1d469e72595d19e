"""Failover (service.failover, the rule in service.liveness): a member silent past its
work window loses its claimed tasks to the pool, whoever notices; the old holder is
fenced; a stream that sent bytes ends `publisher_lost`. Real moto, the relay's service."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from natrelay.errors import PublisherLostError, SessionForbiddenError, TaskMovedError
from natrelay.service import Principal, Relay
from natrelay.service.assembly import build_relay
from natrelay.service.outcomes import task_error
from natrelay.settings import Settings
from natrelay.store import Stores, TaskRecord
from natrelay.web.doorbell import closed
from natrelay.wire import (
    ChunkBatch,
    ErrorCode,
    HeartbeatRequest,
    PollRequest,
    RegisterRequest,
    Role,
    TaskResult,
    TaskState,
)
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, claim, spec

pytestmark = pytest.mark.anyio

WINDOW = 10.0  # the default work window


async def member(relay: Relay, *, work_beats: bool = True) -> str:
    registration = await relay.sessions.register(
        PUB, RegisterRequest(providers=[spec("a")], work_beats=work_beats)
    )
    return registration.session.id


async def work_beat(relay: Relay, session: str, *running: str) -> list[str]:
    """A work beat, and the tasks its answer says to stop."""
    req = HeartbeatRequest(provider_session_id=session, running=list(running), work=True)
    await relay.sessions.work_beat(PUB, req)
    return await relay.abandoned.of(session, req.running)


async def current(relay: Relay, task_id: str) -> TaskRecord:
    task = await relay.tasks.get(task_id, relay.clock())
    assert task is not None
    return task


async def test_a_silent_member_loses_its_tasks_and_is_fenced(
    relay: Relay, clock: FakeClock
) -> None:
    silent, other = await member(relay), await member(relay)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    [polled] = await claim(relay, silent)
    assert polled.id == task.id
    # beats keep it: the window runs from the last sign of life, not from the claim
    for _ in range(3):
        clock.advance(WINDOW - 2)
        assert await work_beat(relay, silent, task.id) == []
        assert await relay.failover.check(await current(relay, task.id)) is None
    clock.advance(WINDOW + 0.5)  # silent past the window
    moved = await relay.failover.check(await current(relay, task.id))
    assert moved is not None and moved.state is TaskState.PENDING
    assert moved.lost_by == silent and moved.session_id is None
    # a second who noticed (another waiter, the sweep) changes nothing
    assert await relay.endings.hand_back(await current(relay, task.id)) is None
    [again] = await claim(relay, other)
    assert again.id == task.id
    # the old holder wakes up: its posts are refused 409 task_moved, its beat says stop
    late = TaskResult(provider_session_id=silent, status=200, body={"late": True})
    with pytest.raises(TaskMovedError) as refused:
        await relay.claims.post_result(PUB, task.id, late)
    assert refused.value.code is ErrorCode.TASK_MOVED and ErrorCode.TASK_MOVED.status == 409
    chunk = ChunkBatch(provider_session_id=silent, seq=0, chunks=[{"late": 1}])
    with pytest.raises(TaskMovedError):
        await relay.claims.post_chunks(PUB, task.id, chunk)
    clock.advance(11)  # past the check's pace (abandoned.CHECK_SECONDS)
    assert await work_beat(relay, silent, task.id) == [task.id]
    # the new holder's answer is the client's one answer
    await relay.claims.post_result(
        PUB, task.id, TaskResult(provider_session_id=other, status=200, body={"ok": 1})
    )
    done = await current(relay, task.id)
    assert done.state is TaskState.COMPLETED and done.claimed_by == other


async def test_a_publisher_without_work_beats_keeps_the_heartbeat_timeout(
    relay: Relay, clock: FakeClock
) -> None:
    older = await member(relay, work_beats=False)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, older)
    clock.advance(WINDOW * 3)  # well inside the 90 s heartbeat timeout
    assert await relay.failover.check(await current(relay, task.id)) is None
    clock.advance(relay.settings.heartbeat_timeout_seconds)
    moved = await relay.failover.check(await current(relay, task.id))
    assert moved is not None and moved.state is TaskState.PENDING


async def test_a_stream_that_sent_bytes_ends_publisher_lost_with_its_usage(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await member(relay)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=True)
    await claim(relay, sid)
    chunk = {"choices": [{"index": 0, "delta": {"content": "some words so far"}}]}
    await relay.claims.post_chunks(
        PUB, task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[chunk])
    )
    clock.advance(WINDOW + 0.5)
    ended = await relay.failover.check(await current(relay, task.id))
    assert ended is not None and ended.state is TaskState.FAILED
    error = task_error(ended)
    assert isinstance(error, PublisherLostError)
    assert error.usage is not None and error.usage["completion_tokens"] == 5  # 17 bytes
    assert ErrorCode.PUBLISHER_LOST.status == 502


async def test_the_sweep_moves_what_nobody_waits_for(relay: Relay, clock: FakeClock) -> None:
    silent, beating = await member(relay), await member(relay)
    lost = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, silent, n=1)
    kept = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, beating, n=1)
    clock.advance(WINDOW - 1)
    await work_beat(relay, beating, kept.id)
    clock.advance(2)
    counts = await relay.sweeper.run()
    assert counts["moved"] == 1, counts
    assert (await current(relay, lost.id)).state is TaskState.PENDING
    assert (await current(relay, kept.id)).claimed_by == beating


async def rung_member(relay: Relay, *connections: str) -> TaskRecord:
    """A member with doorbell connections (the last one current) holding a task."""
    sid = await member(relay)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)
    session = await relay.stores.sessions.get(sid)
    assert session is not None
    for connection in connections:
        await relay.doorbell.connect(session, connection)
    return task


@pytest.mark.parametrize(
    ("code", "moves"), [(1006, True), (None, True), (1000, False), (1001, False)]
)
async def test_a_doorbell_that_breaks_is_a_death_notice(
    relay: Relay, code: int | None, moves: bool
) -> None:
    task = await rung_member(relay, "conn-1")
    await closed(relay, "conn-1", code)  # at once: no window to wait for
    state = (await current(relay, task.id)).state
    assert state is (TaskState.PENDING if moves else TaskState.CLAIMED)


async def test_a_newer_doorbell_makes_the_old_ones_close_no_notice(relay: Relay) -> None:
    task = await rung_member(relay, "old", "new")  # it reconnected before the old closed
    await closed(relay, "old", 1006)
    assert (await current(relay, task.id)).state is TaskState.CLAIMED


async def test_only_its_key_beats_for_a_session(relay: Relay) -> None:
    sid = await member(relay)
    other_key = Principal(key_id="pub-b", role=Role.PUBLISHER)
    req = HeartbeatRequest(provider_session_id=sid, running=[], work=True)
    with pytest.raises(SessionForbiddenError):
        await relay.sessions.work_beat(other_key, req)
    unknown = HeartbeatRequest(provider_session_id="no-such-session", running=[], work=True)
    with pytest.raises(SessionForbiddenError):
        await relay.sessions.work_beat(PUB, unknown)


@pytest.mark.parametrize("beats_again", [False, True])
async def test_a_long_poll_dropped_by_a_busy_member_is_checked_a_beat_later(
    client: Any, clock: FakeClock, beats_again: bool
) -> None:
    """Server mode: a member holding tasks whose long-poll connection drops is dead, or
    just polling anew: unless it beats within two work beats, its tasks move (long before
    the window)."""
    settings = Settings(
        llms_table="Llms",
        tasks_table="Tasks",
        work_beat_seconds=0.05,
        poll_min_interval_seconds=0.005,
        poll_max_interval_seconds=0.02,
    )
    relay = build_relay(settings, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    sid = await member(relay)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)

    async def hung_up() -> bool:
        return True

    poll = PollRequest(provider_session_id=sid, wait_seconds=1, running=[task.id])
    assert await relay.claims.poll(PUB, poll, gone=hung_up) == []
    if beats_again:
        clock.advance(1)
        await work_beat(relay, sid, task.id)
    with anyio.fail_after(10):
        while relay.failover.checking:
            await anyio.sleep(0.01)
    state = (await current(relay, task.id)).state
    assert state is (TaskState.CLAIMED if beats_again else TaskState.PENDING)
