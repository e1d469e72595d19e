"""Per-process caps: concurrent long-polls per session, and the in-process hint buffer
of a waiter that does not read (a paused SSE client)."""

from __future__ import annotations

import json

import anyio
import pytest

from natrelay.errors import RateLimitError
from natrelay.service import Relay
from natrelay.wire import ChunkBatch, ErrorCode, PollRequest, TaskResult
from tests.server.conftest import PUB, FakeClock, claimed, register, spec

pytestmark = pytest.mark.anyio


async def test_polls_past_the_cap_of_one_session_get_429(relay: Relay, clock: FakeClock) -> None:
    clock.step = 0.001
    sid = await register(relay, spec("a"))
    cap = relay.settings.max_polls_per_session
    ended: list[int] = []

    async def poll() -> None:
        req = PollRequest(provider_session_id=sid, wait_seconds=1, max_tasks=1)
        ended.append(len(await relay.claims.poll(PUB, req)))

    async with anyio.create_task_group() as tg:
        for _ in range(cap):
            tg.start_soon(poll)
        await anyio.sleep(0.05)
        with pytest.raises(RateLimitError) as info:
            await relay.claims.poll(
                PUB, PollRequest(provider_session_id=sid, wait_seconds=1, max_tasks=1)
            )
        assert info.value.code == ErrorCode.RATE_LIMIT_EXCEEDED
        assert f"{cap}" in info.value.message and info.value.retry_after >= 1
        # a pure heartbeat (maxTasks 0) never waits, so it is never refused
        await relay.claims.poll(PUB, PollRequest(provider_session_id=sid, max_tasks=0))
    assert ended == [0] * cap
    await relay.claims.poll(PUB, PollRequest(provider_session_id=sid, wait_seconds=0))


async def test_a_paused_stream_reader_holds_a_bounded_buffer(relay: Relay) -> None:
    sid, task = await claimed(relay, stream=True)
    reader = relay.waiting.stream(task.id, budget=30)
    n = 3 * relay.settings.signal_buffer_hints

    async def post(seq: int) -> None:
        batch = ChunkBatch(provider_session_id=sid, seq=seq, chunks=[{"n": seq}])
        await relay.claims.post_chunks(PUB, task.id, batch)

    await post(0)
    first = await anext(reader)
    for seq in range(1, n):  # the reader does not read meanwhile (a paused SSE client)
        await post(seq)
        assert relay.wakeups.held() <= relay.settings.signal_buffer_hints
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, chunk_count=n))
    rest = [json.loads(c.data)[0]["n"] async for c in reader]
    assert [json.loads(first.data)[0]["n"], *rest] == list(range(n))
