"""The sweep: liveness, retention, leases; idempotent, conditional, index-driven."""

from __future__ import annotations

from typing import Any

import pytest

from natrelay.service import Relay
from natrelay.store._dynamo import encode
from natrelay.wire import ChunkBatch, HeartbeatRequest, LlmStatus, SessionRequest, TaskState
from tests.server.conftest import (
    CHAT,
    CLIENT,
    PUB,
    FakeClock,
    OpCounter,
    claim,
    claimed,
    register,
    spec,
)

pytestmark = pytest.mark.anyio


async def test_rows_past_the_heartbeat_timeout_become_inactive(
    relay: Relay, clock: FakeClock
) -> None:
    await register(relay, spec("old"))
    clock.advance(60)
    await register(relay, spec("young"))
    clock.advance(40)  # old: 100 s without heartbeat, young: 40 s
    counts = await relay.sweeper.run()
    assert counts["inactive"] == 1
    old, young = await relay.catalog.get(CLIENT, "old"), await relay.catalog.get(CLIENT, "young")
    assert old.status is LlmStatus.INACTIVE and old.inactive_since == pytest.approx(clock.now)
    assert young.status is LlmStatus.ACTIVE


async def test_a_heartbeat_that_lands_mid_sweep_wins(
    relay: Relay, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await register(relay, spec("a"))
    clock.advance(100)
    stale = relay.stores.row_sweep.stale

    async def stale_then_heartbeat(cutoff: float) -> list[str]:
        found = await stale(cutoff)
        # the publisher's heartbeat arrives between the sweep's query and its write
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
        return found

    monkeypatch.setattr(relay.stores.row_sweep, "stale", stale_then_heartbeat)
    counts = await relay.sweeper.run()
    assert counts["inactive"] == 0 and counts["raced"] == 1
    assert (await relay.catalog.get(CLIENT, "a")).status is LlmStatus.ACTIVE


async def test_a_swept_row_comes_back_with_the_next_heartbeat(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a", LlmStatus.HIBERNATING, wake=10))
    clock.advance(100)
    await relay.sweeper.run()
    assert (await relay.catalog.get(CLIENT, "a")).status is LlmStatus.INACTIVE
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    row = await relay.catalog.get(CLIENT, "a")
    assert row.status is LlmStatus.HIBERNATING and row.inactive_since is None


async def test_inactive_rows_are_deleted_after_the_retention_only(
    relay: Relay, clock: FakeClock
) -> None:
    await register(relay, spec("a"))
    clock.advance(100)
    await relay.sweeper.run()
    clock.advance(relay.settings.inactive_retention_seconds - 10)
    assert (await relay.sweeper.run())["deleted"] == 0
    clock.advance(20)
    assert (await relay.sweeper.run())["deleted"] == 1
    assert await relay.catalog.all(CLIENT) == []


async def test_only_virtual_rows_are_touched(relay: Relay, clock: FakeClock, client: Any) -> None:
    client.put_item(
        TableName="Llms",
        Item=encode(
            {
                "name": "static",
                "kind": "static",
                "type": "openai",
                "model": "x",
                "status": "active",
                "lastHeartbeatAt": clock.now - 10_000,
            }
        ),
    )
    clock.advance(5 * 3600)
    await relay.sweeper.run()
    assert (await relay.catalog.get(CLIENT, "static")).status is LlmStatus.ACTIVE


async def test_sweep_is_idempotent_and_never_scans(
    relay: Relay, clock: FakeClock, client: Any
) -> None:
    await register(relay, spec("a"))
    await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    clock.advance(100)
    counter = OpCounter(client)
    first = await relay.sweeper.run()
    assert first["inactive"] == 1 and first["failedPending"] == 1
    second = await relay.sweeper.run()
    assert not any(second.values())
    assert "Scan" not in counter.ops


async def test_pending_tasks_of_a_gone_publisher_fail_fast(relay: Relay, clock: FakeClock) -> None:
    await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    clock.advance(100)
    await relay.sweeper.run()
    done, _ = await relay.waiting.get_with_result(task.id)
    assert done.state is TaskState.FAILED
    assert done.error is not None and "offline" in done.error["message"]


async def test_lease_of_a_live_publisher_is_extended(relay: Relay, clock: FakeClock) -> None:
    sid, task = await claimed(relay)
    clock.advance(relay.settings.lease_seconds + 1)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    assert (await relay.sweeper.run())["extended"] == 1
    assert (await relay.waiting.get_with_result(task.id))[0].state is TaskState.CLAIMED


async def test_lease_of_a_restarted_publisher_is_handed_out_again(
    relay: Relay, clock: FakeClock
) -> None:
    sid, task = await claimed(relay)
    await register(relay, spec("a"), session=sid)  # restart: new generation
    clock.advance(relay.settings.lease_seconds + 1)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    assert (await relay.sweeper.run())["requeued"] == 1
    assert [t.id for t in await claim(relay, sid)] == [task.id]


async def test_lease_with_output_already_sent_fails_instead_of_rerunning(
    relay: Relay, clock: FakeClock
) -> None:
    sid, task = await claimed(relay, stream=True)
    await relay.claims.post_chunks(
        PUB, task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[{}])
    )
    await register(relay, spec("a"), session=sid)
    clock.advance(relay.settings.lease_seconds + 1)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    assert (await relay.sweeper.run())["failed"] == 1
    assert (await relay.waiting.get_with_result(task.id))[0].state is TaskState.FAILED


async def test_lease_of_a_dead_publisher_fails_the_task(relay: Relay, clock: FakeClock) -> None:
    _, task = await claimed(relay)
    clock.advance(200)  # the only member of the pool is gone: nobody to hand it to
    counts = await relay.sweeper.run()
    assert counts["failed"] == 1
    done, _ = await relay.waiting.get_with_result(task.id)
    assert done.state is TaskState.FAILED and "vanished" in (done.error or {})["message"]


async def test_a_task_held_past_the_maximum_age_fails_even_if_its_publisher_lives(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)  # e.g. the poll answer was lost on the way
    for _ in range(int(relay.settings.max_task_seconds // 60) + 1):
        clock.advance(61)
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
        await relay.sweeper.run()
    done, _ = await relay.waiting.get_with_result(task.id)
    assert done.state is TaskState.FAILED


async def test_deregister_fails_every_queued_task_not_only_the_first_hundred(
    relay: Relay,
) -> None:
    sid = await register(relay, spec("a"))
    ids = [(await relay.queue.submit(CLIENT, "a", CHAT, stream=False)).id for _ in range(130)]
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    states = {(await relay.waiting.get(task_id)).state for task_id in ids}
    assert states == {TaskState.FAILED}


async def test_a_publisher_back_after_the_expiry_never_runs_stale_requests(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    clock.advance(task.lease_seconds + relay.settings.result_retention_seconds + 60)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    assert await claim(relay, sid) == []
    done = await relay.waiting.get(task.id)  # failed, not lingering as pending
    assert done.state is TaskState.FAILED and done.error is not None
    assert "expired" in done.error["message"]


async def test_a_re_register_that_drops_a_name_retires_its_row_only(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"), spec("b"))
    dropped = await relay.queue.submit(CLIENT, "b", CHAT, stream=False)
    await register(relay, spec("a"), session=sid)  # the publisher no longer serves b
    row = await relay.catalog.get(CLIENT, "b")
    assert row.status is LlmStatus.INACTIVE
    assert (await relay.waiting.get(dropped.id)).state is TaskState.FAILED
    kept = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    for _ in range(3):
        clock.advance(40)
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
        await relay.sweeper.run()
    assert (await relay.waiting.get(kept.id)).state is TaskState.PENDING
    assert (await relay.catalog.get(CLIENT, "a")).status is LlmStatus.ACTIVE


async def test_a_stale_row_fails_only_its_own_queued_tasks(
    relay: Relay, clock: FakeClock, client: Any
) -> None:
    sid = await register(relay, spec("a"), spec("b"))
    for_a = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    for_b = await relay.queue.submit(CLIENT, "b", CHAT, stream=False)
    clock.advance(100)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    # b's row missed the heartbeat (e.g. an older relay, or a beat cut short)
    client.update_item(
        TableName="Llms",
        Key={"name": {"S": "b"}},
        UpdateExpression="SET lastHeartbeatAt = :old, sweepAt = :old",
        ExpressionAttributeValues={":old": {"N": str(clock.now - 100)}},
    )
    counts = await relay.sweeper.run()
    assert counts["inactive"] == 1 and counts["failedPending"] == 1
    assert (await relay.waiting.get(for_b.id)).state is TaskState.FAILED
    assert (await relay.waiting.get(for_a.id)).state is TaskState.PENDING
