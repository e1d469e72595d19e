"""Stored payloads: result parts only the accepted result can name, chunk expiry, odd
input from publishers and backends (never a 500, never a stuck task)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import JSONResponse

from natrelay.errors import ResultConflictError, TaskNotClaimedError
from natrelay.service import Relay
from natrelay.store._task_items import INLINE_LIMIT
from natrelay.web import views
from natrelay.wire import ChunkBatch, ErrorInfo, TaskResult, TaskState
from tests.server.conftest import PUB, FakeClock, claimed, register, spec

pytestmark = pytest.mark.anyio


async def test_a_refused_result_never_replaces_the_parts_of_a_finished_large_one(
    relay: Relay,
) -> None:
    sid, task = await claimed(relay)
    intruder = await register(relay, spec("other"))
    genuine = {"content": "G" * (3 * INLINE_LIMIT)}
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body=genuine))
    # another session posts something larger: refused, and its parts must not count
    with pytest.raises(TaskNotClaimedError):
        await relay.claims.post_result(
            PUB,
            task.id,
            TaskResult(provider_session_id=intruder, body={"content": "F" * (5 * INLINE_LIMIT)}),
        )
    # a stale, different post of the claimer, shorter than the genuine one
    with pytest.raises(ResultConflictError):
        await relay.claims.post_result(
            PUB,
            task.id,
            TaskResult(provider_session_id=sid, body={"content": "S" * (2 * INLINE_LIMIT)}),
        )
    outcome = await relay.waiting.outcome(await relay.waiting.wait(task.id, budget=5))
    assert outcome.body == genuine
    # the same result again is still harmless
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body=genuine))
    assert (await relay.waiting.outcome(await relay.waiting.get(task.id))).body == genuine


async def test_stream_chunks_expire_with_the_task(
    relay: Relay, client: Any, clock: FakeClock
) -> None:
    sid, task = await claimed(relay, stream=True)
    for seq in range(3):
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=sid, seq=seq, chunks=[{"n": seq}])
        )
    items = client.query(
        TableName="Tasks",
        KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
        ExpressionAttributeValues={":pk": {"S": f"task#{task.id}"}, ":c": {"S": "c#"}},
    )["Items"]
    assert len(items) == 3
    s = relay.settings
    latest = clock.now + s.max_task_seconds + s.result_retention_seconds
    for item in items:
        assert "expiresAt" in item, item["sk"]
        assert clock.now < int(item["expiresAt"]["N"]) <= latest + 1


async def test_a_huge_backend_error_is_truncated_with_a_marker(relay: Relay) -> None:
    sid, task = await claimed(relay)
    message = "E" * 500_000
    await relay.claims.post_result(
        PUB,
        task.id,
        TaskResult(
            provider_session_id=sid,
            status=502,
            error=ErrorInfo(message=message, code="backend_error", type="x" * 100_000),
        ),
    )
    done = await relay.waiting.wait(task.id, budget=5)
    assert done.error is not None
    stored = done.error["message"]
    assert stored.startswith("EEEE") and "[truncated" in stored and len(stored) < 20_000
    assert len(done.error["type"]) < 20_000


async def test_a_stored_infinity_reads_back_as_json_can_carry_it(relay: Relay) -> None:
    """A result an older relay stored with -Infinity: read as null (as JSON.stringify
    does), so the answer renders instead of failing with a 500."""
    sid, task = await claimed(relay)
    now = relay.clock()
    await relay.stores.tasks.store_result(
        task.id,
        sid,
        key=PUB.key_id,
        state=TaskState.COMPLETED,
        status=200,
        body=b'{"model": "/srv/llama.gguf", "logprob": -Infinity, "big": 1e999}',
        error=None,
        chunk_count=0,
        now=now,
        expires_at=now + 60,
    )
    done = await relay.waiting.wait(task.id, budget=5)
    outcome = await relay.waiting.outcome(done)
    assert outcome.body == {"model": "a", "logprob": None, "big": None}
    JSONResponse(outcome.body)  # renders: no ValueError
    _, raw = await relay.waiting.get_with_result(task.id)
    view = views.task_view(done, raw)
    assert view.result == {"model": "a", "logprob": None, "big": None}
