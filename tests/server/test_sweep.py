"""The sweep: liveness, retention, leases; idempotent, conditional, index-driven."""

from __future__ import annotations

from typing import Any

import pytest

from natrelay.service import RelayService
from natrelay.store._dynamo import encode
from natrelay.wire import ChunkBatch, HeartbeatRequest, LlmStatus, TaskState
from tests.server.conftest import CHAT, FakeClock, OpCounter, claim, claimed, register, spec

pytestmark = pytest.mark.anyio


async def test_rows_past_the_heartbeat_timeout_become_inactive(
    service: RelayService, clock: FakeClock
) -> None:
    await register(service, spec("old"))
    clock.advance(60)
    await register(service, spec("young"))
    clock.advance(40)  # old: 100 s without heartbeat, young: 40 s
    counts = await service.sweep()
    assert counts["inactive"] == 1
    old, young = await service.get_llm("old"), await service.get_llm("young")
    assert old.status is LlmStatus.INACTIVE and old.inactive_since == pytest.approx(clock.now)
    assert young.status is LlmStatus.ACTIVE


async def test_a_heartbeat_that_lands_mid_sweep_wins(
    service: RelayService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await register(service, spec("a"))
    clock.advance(100)
    stale = service.llms.stale

    def stale_then_heartbeat(cutoff: float) -> list[tuple[str, str | None]]:
        found = stale(cutoff)
        # the publisher's heartbeat arrives between the sweep's query and its write
        service.llms.heartbeat(service.llms.get_session(sid), {}, clock.now, 90, 3600)
        return found

    monkeypatch.setattr(service.llms, "stale", stale_then_heartbeat)
    counts = await service.sweep()
    assert counts["inactive"] == 0 and counts["raced"] == 1
    assert (await service.get_llm("a")).status is LlmStatus.ACTIVE


async def test_a_swept_row_comes_back_with_the_next_heartbeat(
    service: RelayService, clock: FakeClock
) -> None:
    sid = await register(service, spec("a", LlmStatus.HIBERNATING, wake=10))
    clock.advance(100)
    await service.sweep()
    assert (await service.get_llm("a")).status is LlmStatus.INACTIVE
    await service.heartbeat(HeartbeatRequest(provider_session_id=sid))
    row = await service.get_llm("a")
    assert row.status is LlmStatus.HIBERNATING and row.inactive_since is None


async def test_inactive_rows_are_deleted_after_the_retention_only(
    service: RelayService, clock: FakeClock
) -> None:
    await register(service, spec("a"))
    clock.advance(100)
    await service.sweep()
    clock.advance(service.settings.inactive_retention_seconds - 10)
    assert (await service.sweep())["deleted"] == 0
    clock.advance(20)
    assert (await service.sweep())["deleted"] == 1
    assert await service.list_llms() == []


async def test_only_virtual_rows_are_touched(
    service: RelayService, clock: FakeClock, client: Any
) -> None:
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
    await service.sweep()
    assert (await service.get_llm("static")).status is LlmStatus.ACTIVE


async def test_sweep_is_idempotent_and_never_scans(
    service: RelayService, clock: FakeClock, client: Any
) -> None:
    await register(service, spec("a"))
    await service.submit("a", CHAT, stream=False)
    clock.advance(100)
    counter = OpCounter(client)
    first = await service.sweep()
    assert first["inactive"] == 1 and first["failedPending"] == 1
    second = await service.sweep()
    assert not any(second.values())
    assert "Scan" not in counter.ops


async def test_pending_tasks_of_a_gone_publisher_fail_fast(
    service: RelayService, clock: FakeClock
) -> None:
    await register(service, spec("a"))
    task = await service.submit("a", CHAT, stream=False)
    clock.advance(100)
    await service.sweep()
    done, _ = await service.get_task(task.id)
    assert done.state is TaskState.FAILED
    assert done.error is not None and "offline" in done.error["message"]


async def test_lease_of_a_live_publisher_is_extended(
    service: RelayService, clock: FakeClock
) -> None:
    sid, task = await claimed(service)
    clock.advance(service.settings.lease_seconds + 1)
    await service.heartbeat(HeartbeatRequest(provider_session_id=sid))
    assert (await service.sweep())["extended"] == 1
    assert (await service.get_task(task.id))[0].state is TaskState.CLAIMED


async def test_lease_of_a_restarted_publisher_is_handed_out_again(
    service: RelayService, clock: FakeClock
) -> None:
    sid, task = await claimed(service)
    await register(service, spec("a"), session=sid)  # restart: new generation
    clock.advance(service.settings.lease_seconds + 1)
    await service.heartbeat(HeartbeatRequest(provider_session_id=sid))
    assert (await service.sweep())["requeued"] == 1
    assert [t.id for t in await claim(service, sid)] == [task.id]


async def test_lease_with_output_already_sent_fails_instead_of_rerunning(
    service: RelayService, clock: FakeClock
) -> None:
    sid, task = await claimed(service, stream=True)
    await service.post_chunks(task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[{}]))
    await register(service, spec("a"), session=sid)
    clock.advance(service.settings.lease_seconds + 1)
    await service.heartbeat(HeartbeatRequest(provider_session_id=sid))
    assert (await service.sweep())["failed"] == 1
    assert (await service.get_task(task.id))[0].state is TaskState.FAILED


async def test_lease_of_a_dead_publisher_fails_the_task(
    service: RelayService, clock: FakeClock
) -> None:
    _, task = await claimed(service)
    clock.advance(200)
    counts = await service.sweep()
    assert counts["failed"] == 1
    done, _ = await service.get_task(task.id)
    assert done.state is TaskState.FAILED and "vanished" in (done.error or {})["message"]


async def test_a_task_held_past_the_maximum_age_fails_even_if_its_publisher_lives(
    service: RelayService, clock: FakeClock
) -> None:
    sid = await register(service, spec("a"))
    task = await service.submit("a", CHAT, stream=False)
    await claim(service, sid)  # e.g. the poll answer was lost on the way
    for _ in range(int(service.settings.max_task_seconds // 60) + 1):
        clock.advance(61)
        await service.heartbeat(HeartbeatRequest(provider_session_id=sid))
        await service.sweep()
    done, _ = await service.get_task(task.id)
    assert done.state is TaskState.FAILED
