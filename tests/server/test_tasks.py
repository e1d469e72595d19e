"""Tasks: claim once, chunks, results, payloads past the item limit, expiry, errors."""

from __future__ import annotations

import json
import os
from typing import Any

import anyio
import pytest

from natrelay.errors import (
    BackendError,
    LlmNotFoundError,
    PayloadTooLargeError,
    PublisherOfflineError,
    ResultConflictError,
    TaskCancelledError,
    TaskNotClaimedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from natrelay.service import Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.store import Stores
from natrelay.web import views
from natrelay.wire import (
    ChunkBatch,
    ErrorInfo,
    LlmStatus,
    PollRequest,
    RegisterRequest,
    TaskResult,
    TaskState,
)
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


async def test_a_task_is_claimed_by_one_poll_only(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    first = await claim(relay, sid)
    assert [t.id for t in first] == [task.id]
    assert first[0].request == CHAT
    assert await claim(relay, sid) == []


async def test_poll_waits_then_returns_empty(relay: Relay, clock: FakeClock) -> None:
    clock.step = 0.01
    sid = await register(relay, spec("a"))
    tasks = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=sid, wait_seconds=1, max_tasks=1)
    )
    assert tasks == []


async def test_tasks_of_one_session_are_invisible_to_another(relay: Relay) -> None:
    sid_a = await register(relay, spec("a"))
    sid_b = await register(relay, spec("b"))
    await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    assert await claim(relay, sid_b) == []
    assert len(await claim(relay, sid_a)) == 1


async def test_non_streamed_result_reaches_the_waiting_client(relay: Relay) -> None:
    sid, task = await claimed(relay)
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {}}
    await relay.claims.post_result(
        PUB, task.id, TaskResult(provider_session_id=sid, status=200, body=answer)
    )
    done = await relay.waiting.wait(task.id, budget=5)
    outcome = await relay.waiting.outcome(done)
    assert outcome.status == 200 and outcome.body == answer


async def test_same_result_twice_is_harmless_another_conflicts(relay: Relay) -> None:
    sid, task = await claimed(relay)
    result = TaskResult(provider_session_id=sid, status=200, body={"x": 1})
    await relay.claims.post_result(PUB, task.id, result)
    again = await relay.claims.post_result(PUB, task.id, result)
    assert again.state is TaskState.COMPLETED
    with pytest.raises(ResultConflictError):
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=sid, status=200, body={"x": 2})
        )


async def test_only_the_claiming_session_may_post(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    other = await register(relay, spec("b"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=True)
    await claim(relay, sid)
    with pytest.raises(TaskNotClaimedError):
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=other, seq=0, chunks=[{"a": 1}])
        )
    with pytest.raises(TaskNotClaimedError):
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=other, status=200)
        )


async def test_chunks_are_ordered_idempotent_and_stream_to_the_client(
    relay: Relay,
) -> None:
    sid, task = await claimed(relay, stream=True)
    for seq in (0, 1, 1, 2):  # seq 1 posted twice: harmless
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=sid, seq=seq, chunks=[{"n": seq}])
        )
    with pytest.raises(ResultConflictError):
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=sid, seq=1, chunks=[{"n": "other"}])
        )
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, chunk_count=3))
    got = [json.loads(c.data) async for c in relay.waiting.stream(task.id, budget=5)]
    assert got == [[{"n": 0}], [{"n": 1}], [{"n": 2}]]


async def test_a_stream_that_fails_midway_yields_its_chunks_then_the_error(
    relay: Relay,
) -> None:
    sid, task = await claimed(relay, stream=True)
    await relay.claims.post_chunks(
        PUB, task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[{}])
    )
    await relay.claims.post_result(
        PUB,
        task.id,
        TaskResult(
            provider_session_id=sid,
            status=502,
            error=ErrorInfo(message="CUDA out of memory", code="backend_error"),
            chunk_count=1,
        ),
    )
    seen = []
    with pytest.raises(BackendError, match="CUDA out of memory") as info:
        async for chunk in relay.waiting.stream(task.id, budget=5):
            seen.append(chunk.seq)
    assert seen == [0]
    assert info.value.status == 502


async def test_cancelled_task_tells_the_publisher_on_its_next_chunk(
    relay: Relay,
) -> None:
    sid, task = await claimed(relay, stream=True)
    await relay.endings.cancel(task.id)
    with pytest.raises(TaskCancelledError):
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[{}])
        )


async def test_backend_errors_keep_4xx_and_turn_the_rest_into_502(
    relay: Relay,
) -> None:
    sid = await register(relay, spec("a"))
    for status, expected in ((400, 400), (500, 502), (503, 502)):
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        await claim(relay, sid)
        await relay.claims.post_result(
            PUB,
            task.id,
            TaskResult(provider_session_id=sid, status=status, error=ErrorInfo(message="bad")),
        )
        with pytest.raises(BackendError) as info:
            await relay.waiting.outcome(await relay.waiting.wait(task.id, budget=5))
        assert info.value.status == expected and info.value.message == "bad"


async def test_wait_past_its_budget_names_the_task_and_the_result_stays_fetchable(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)  # a member runs it, slowly
    clock.step = 0.5
    with pytest.raises(TaskTimeoutError) as info:
        await relay.waiting.wait(task.id, budget=2)
    assert info.value.task_id == task.id and task.id in info.value.message
    clock.step = 0
    await relay.claims.post_result(
        PUB, task.id, TaskResult(provider_session_id=sid, body={"late": True})
    )
    done, result = await relay.waiting.get_with_result(task.id)
    assert done.state is TaskState.COMPLETED
    assert views.task_view(done, result).result == {"late": True}


async def test_results_expire_after_the_retention(relay: Relay, clock: FakeClock) -> None:
    sid, task = await claimed(relay)
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body={}))
    clock.advance(relay.settings.result_retention_seconds + 1)
    with pytest.raises(TaskNotFoundError):
        await relay.waiting.get_with_result(task.id)


async def test_five_megabyte_prompt_and_answer_round_trip_byte_for_byte(
    relay: Relay, client: object
) -> None:
    sid = await register(relay, spec("a"))
    prompt = os.urandom(5 * 1024 * 1024 // 2).hex()  # 5 MiB of text
    body = {"model": "a", "messages": [{"role": "user", "content": prompt}]}
    task = await relay.queue.submit(CLIENT, "a", body, stream=False)
    polled = await claim(relay, sid)
    assert polled[0].request is None and polled[0].request_size > 5 * 1024 * 1024
    assert json.loads(await relay.claims.task_request(PUB, task.id, sid)) == body
    answer = {"choices": [{"message": {"content": prompt[::-1]}}]}
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body=answer))
    outcome = await relay.waiting.outcome(await relay.waiting.wait(task.id, budget=5))
    assert outcome.body == answer


async def test_a_body_over_the_limit_is_refused(relay: Relay) -> None:
    await register(relay, spec("a"))
    body = {"model": "a", "messages": [{"role": "user", "content": "x" * 7_000_000}]}
    with pytest.raises(PayloadTooLargeError, match="6291456"):
        await relay.queue.submit(CLIENT, "a", body, stream=False)


async def test_unknown_and_offline_llms(relay: Relay, clock: FakeClock) -> None:
    with pytest.raises(LlmNotFoundError):
        await relay.queue.submit(CLIENT, "nope", CHAT, stream=False)
    await register(relay, spec("a"))
    clock.advance(relay.settings.heartbeat_timeout_seconds + 5)
    # no sweep has run yet, but a row past its heartbeat timeout is offline all the same
    with pytest.raises(PublisherOfflineError, match="offline"):
        await relay.queue.submit(CLIENT, "a", CHAT, stream=False)


async def test_a_client_waiting_on_a_vanished_publisher_is_told_so(
    relay: Relay, clock: FakeClock
) -> None:
    await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    clock.step = 1.0  # the publisher never polls again
    done = await relay.waiting.wait(task.id, budget=500)
    assert done.state is TaskState.FAILED
    with pytest.raises(PublisherOfflineError, match="went offline"):
        await relay.waiting.outcome(done)


async def test_non_streamed_inference_costs_few_dynamodb_requests(
    relay: Relay, client: object
) -> None:
    sid = await register(relay, spec("a"))
    counter = OpCounter(client)
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body={}))
    await relay.waiting.outcome(await relay.waiting.wait(task.id, budget=5))
    # get row, read the pool's queue depth, put task | get session, query queue, claim |
    # complete, count usage | read the task (a key without limits needs no admission write)
    assert counter.ops == [
        "GetItem",
        "Query",
        "PutItem",
        "GetItem",
        "Query",
        "UpdateItem",
        "UpdateItem",
        "UpdateItem",
        "GetItem",
    ]


async def test_in_process_wakeups_skip_the_index_query_and_the_result_read(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    slow = settings.model_copy(
        update={
            "poll_min_interval_seconds": 5.0,
            "poll_max_interval_seconds": 5.0,
            "fast_path": False,  # the durable path: the fast path's test is below
        }
    )
    relay = build_relay(slow, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    sid = await register(relay, spec("a"))
    counter = OpCounter(client)
    polled: list[Any] = []
    done: list[Any] = []

    async def poller() -> None:
        polled.extend(
            await relay.claims.poll(
                PUB, PollRequest(provider_session_id=sid, wait_seconds=5, max_tasks=1)
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller)
        for _ in range(1000):  # the poll found nothing (its read landed) and waits
            if "Query" in counter.ops:
                break
            await anyio.sleep(0.01)
        counter.ops.clear()
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)

    async def waiter() -> None:
        done.append(await relay.waiting.wait(task.id, budget=5, fresh=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=sid, body={"ok": 1})
        )
    assert [t.id for t in polled] == [task.id]
    assert (await relay.waiting.outcome(done[0])).body == {"ok": 1}
    # get row, read the pool's queue depth, put task, claim (no index query), complete,
    # count usage; the waiter never reads: it took the finished task from the signal
    assert counter.ops == [
        "GetItem",
        "Query",
        "PutItem",
        "UpdateItem",
        "UpdateItem",
        "UpdateItem",
    ]


async def test_a_poll_that_names_its_generation_skips_the_session_read(
    relay: Relay, client: Any, clock: FakeClock
) -> None:
    reg = await relay.sessions.register(PUB, RegisterRequest(providers=[spec("a")]))
    counter = OpCounter(client)

    def ops() -> list[str]:  # the queue's Query aside (a poll here may know it empty)
        return [op for op in counter.ops if op != "Query"]

    poll = PollRequest(
        provider_session_id=reg.session.id,
        wait_seconds=0,
        max_tasks=1,
        generation=reg.session.generation,
    )
    await relay.claims.poll(PUB, poll)
    assert ops() == []
    counter.ops.clear()
    await relay.claims.poll(PUB, poll.model_copy(update={"generation": None}))  # an older publisher
    assert ops() == ["GetItem"]
    counter.ops.clear()
    clock.advance(60)  # the heartbeat is due: refreshed in one write, without a read
    await relay.claims.poll(PUB, poll)
    assert ops() == ["TransactWriteItems"]
    counter.ops.clear()
    await relay.stores.row_sweep.expire_if_stale("a", clock() + 1, clock())  # the sweep was faster
    counter.ops.clear()
    clock.advance(60)  # the quiet write finds the row inactive: read, and the full heartbeat
    await relay.claims.poll(PUB, poll)
    assert ops()[:2] == ["TransactWriteItems", "GetItem"] and "UpdateItem" in ops()
    assert (await relay.stores.llms.get("a")).status is LlmStatus.ACTIVE  # type: ignore[union-attr]
