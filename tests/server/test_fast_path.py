"""The fast path (service.local_polls, store.memory_tasks): a request handed in memory to a
poll waiting in this process, its record written behind the answer; and every way off it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from natrelay.errors import (
    ResultConflictError,
    TaskCancelledError,
    TaskNotClaimedError,
    TaskTimeoutError,
)
from natrelay.service import Principal, Relay
from natrelay.service.assembly import build_relay
from natrelay.service.empty_queues import ALONE_RECHECK_SECONDS
from natrelay.settings import Settings
from natrelay.store import Stores, TaskRecord
from natrelay.store.row_cache import RowCache
from natrelay.wakeups import pool_topic
from natrelay.wire import (
    ChunkBatch,
    PollRequest,
    RegisterRequest,
    Role,
    SessionRequest,
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
    register,
    spec,
)

pytestmark = pytest.mark.anyio

OTHER_PUB = Principal(key_id="pub-b", role=Role.PUBLISHER)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # An idle poll never re-checks DynamoDB while a test runs, however slowly (signals wake
    # it at once), so a test sees exactly what a request costs.
    return settings.model_copy(
        update={"poll_min_interval_seconds": 60, "poll_max_interval_seconds": 60}
    )


@asynccontextmanager
async def polling(
    relay: Relay, sid: str, principal: Principal = PUB, wait: float = 25
) -> AsyncIterator[Callable[[], Awaitable[list[TaskRecord]]]]:
    """A poll of `sid` waiting in this process; `got()` waits for what it returned."""
    out: list[list[TaskRecord]] = []
    done = anyio.Event()

    async def poller() -> None:
        req = PollRequest(provider_session_id=sid, wait_seconds=wait, max_tasks=4)
        out.append(await relay.claims.poll(principal, req))
        done.set()

    async def got() -> list[TaskRecord]:
        await done.wait()
        return out[0]

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller)
        await idle(relay, sid)
        yield got


async def handed(relay: Relay, *, stream: bool) -> tuple[str, TaskRecord]:
    """A publisher session with `a`, and a task of it handed to its poll in memory."""
    sid = await register(relay, spec("a"))
    async with polling(relay, sid) as got:
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=stream)
        assert [t.id for t in await got()] == [task.id]
    return sid, task


async def idle(relay: Relay, sid: str) -> None:
    """Until a poll of `sid` found nothing and waits idle (the fast path may hand it a task)."""
    if not relay.polls.enabled:
        await anyio.sleep(0.2)  # no offers to see: the poll waits on DynamoDB
        return
    looked = relay.claims.empty._seen  # the pools whose queue a poll found empty
    for _ in range(500):
        for offer in relay.polls.offers():
            # on offer, and done with its first look at its pools' queues
            first_look = all(pool_topic(name) in looked for name in offer.session.names)
            if offer.idle and offer.session.id == sid and first_look:
                return
        await anyio.sleep(0.01)
    raise AssertionError(f"no idle poll of {sid}")


async def test_a_request_for_an_idle_poll_here_skips_dynamodb_until_it_is_answered(
    relay: Relay, client: Any
) -> None:
    sid = await register(relay, spec("a"))
    counter = OpCounter(client)
    async with polling(relay, sid) as got:
        # the poll waits idle once it has looked at the queue (it may say so before)
        for _ in range(1000):
            if "Query" in counter.ops:
                break
            await anyio.sleep(0.01)
        counter.ops.clear()
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        polled = await got()
    assert [t.id for t in polled] == [task.id]
    assert polled[0].state is TaskState.CLAIMED and polled[0].request is not None
    assert counter.ops == ["GetItem"], counter.ops  # the row; no task put, no claim
    assert await relay.stores.tasks.get(task.id, relay.clock()) is None  # not written yet
    assert (await relay.waiting.get(task.id)).state is TaskState.CLAIMED  # known here

    done: list[TaskRecord] = []

    async def waiter() -> None:
        done.append(await relay.waiting.wait(task.id, budget=5, fresh=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        counter.ops.clear()
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=sid, body={"ok": 1})
        )
    assert (await relay.waiting.outcome(done[0])).body == {"ok": 1}
    assert counter.ops == []  # answered: the record and the usage are written behind it
    assert (await relay.waiting.get(task.id)).state is TaskState.COMPLETED  # from memory
    await relay.drain()
    # the record, the key's usage and the row's count of the hour, each in a batch with
    # whatever else ended meanwhile (and, once an hour, the row's name among those counted)
    assert counter.ops == ["BatchWriteItem", "UpdateItem", "UpdateItem", "UpdateItem"]
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.COMPLETED
    assert stored.claimed_by == sid and stored.client_key == CLIENT.key_id
    assert await relay.stores.tasks.result(stored) == b'{"ok":1}'
    assert await relay.stores.tasks.request(stored) == polled[0].request
    # posting the same result again is harmless; another result is refused
    again = await relay.claims.post_result(
        PUB, task.id, TaskResult(provider_session_id=sid, body={"ok": 1})
    )
    assert again.state is TaskState.COMPLETED
    with pytest.raises(ResultConflictError):
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=sid, body={"ok": 2})
        )


async def test_without_an_idle_poll_here_the_durable_path_serves(relay: Relay) -> None:
    await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.PENDING


async def test_async_requests_and_a_disabled_fast_path_are_durable(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    relay = build_relay(settings, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    sid = await register(relay, spec("a"))
    async with polling(relay, sid) as got:
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False, fast=False)
        assert [t.id for t in await got()] == [task.id]
    assert await relay.stores.tasks.get(task.id, clock()) is not None
    off = build_relay(
        settings.model_copy(update={"fast_path": False}),
        Stores.on(client, "Llms", "Tasks", "Keys"),
        clock=clock,
    )
    async with polling(off, sid) as got:
        task = await off.queue.submit(CLIENT, "a", CHAT, stream=False)
        assert [t.id for t in await got()] == [task.id]
    assert await off.stores.tasks.get(task.id, clock()) is not None


async def test_a_handed_stream_reads_its_chunks_from_memory_and_keeps_them(
    relay: Relay,
) -> None:
    sid, task = await handed(relay, stream=True)
    read: list[bytes] = []

    async def reader() -> None:
        async for chunk in relay.waiting.stream(task.id, budget=5, submitted=task):
            read.append(chunk.data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        for seq in range(3):
            batch = ChunkBatch(provider_session_id=sid, seq=seq, chunks=[{"n": seq}])
            await relay.claims.post_chunks(PUB, task.id, batch)
            await anyio.sleep(0.02)
        await relay.claims.post_result(
            PUB, task.id, TaskResult(provider_session_id=sid, chunk_count=3)
        )
    assert read == [b'[{"n":0}]', b'[{"n":1}]', b'[{"n":2}]']
    await relay.drain()
    stored = await relay.stores.chunks.read_stream(task.id, -1, relay.clock())
    assert [c.data for c in stored.chunks] == read
    assert stored.task is not None and stored.task.state is TaskState.COMPLETED


async def test_a_client_that_stops_waiting_leaves_the_task_durable_for_later(
    relay: Relay, clock: FakeClock
) -> None:
    sid, task = await handed(relay, stream=False)
    clock.step = 0.05
    with pytest.raises(TaskTimeoutError):
        await relay.waiting.wait(task.id, budget=0.5, fresh=True)
    clock.step = 0
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.CLAIMED
    assert stored.claimed_by == sid and stored.lease_until is not None
    # the publisher's result lands on the durable task
    await relay.claims.post_result(PUB, task.id, TaskResult(provider_session_id=sid, body={"a": 2}))
    done, result = await relay.waiting.get_with_result(task.id, CLIENT)
    assert done.state is TaskState.COMPLETED and result == b'{"a":2}'


async def test_a_cancelled_handed_task_refuses_the_publisher_and_is_recorded(
    relay: Relay,
) -> None:
    sid, task = await handed(relay, stream=True)
    await relay.endings.cancel(task.id)
    with pytest.raises(TaskCancelledError):
        await relay.claims.post_chunks(
            PUB, task.id, ChunkBatch(provider_session_id=sid, seq=0, chunks=[{}])
        )
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.CANCELLED


async def test_only_the_claiming_session_of_its_key_may_post_for_a_handed_task(
    relay: Relay,
) -> None:
    sid = await register(relay, spec("a"))
    other = await relay.sessions.register(OTHER_PUB, RegisterRequest(providers=[spec("b")]))
    async with polling(relay, sid) as got:
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        await got()
    for principal, session in ((OTHER_PUB, other.session.id), (OTHER_PUB, sid), (PUB, "x" * 20)):
        with pytest.raises(TaskNotClaimedError) as caught:
            await relay.claims.post_result(
                principal, task.id, TaskResult(provider_session_id=session, body={"stolen": 1})
            )
        assert "stolen" not in str(caught.value)
    assert (await relay.waiting.get(task.id)).state is TaskState.CLAIMED  # untouched


async def test_a_publisher_that_leaves_hands_its_handed_tasks_back_to_the_pool(
    relay: Relay,
) -> None:
    sid, task = await handed(relay, stream=False)
    second = await register(relay, spec("a"))  # another member of the pool
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.PENDING  # back in the queue
    polled = await relay.claims.poll(
        PUB, PollRequest(provider_session_id=second, wait_seconds=0, max_tasks=1)
    )
    assert [t.id for t in polled] == [task.id]


async def test_a_poll_cancelled_with_a_task_in_hand_gives_it_back(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    req = PollRequest(provider_session_id=sid, wait_seconds=5, max_tasks=1)
    answered: list[list[TaskRecord]] = []

    async def poller() -> None:
        answered.append(await relay.claims.poll(PUB, req))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller)
        await idle(relay, sid)
        task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
        tg.cancel_scope.cancel()  # the publisher hung up before the poll answered
    if answered:
        # The poll woke and answered before the cancel reached it: its answer is lost on
        # the way, as a gateway's 504 loses it; the lease runs out and the task goes back.
        assert [t.id for t in answered[0]] == [task.id]
        # The publisher lives on and says it runs nothing.
        clock.advance(relay.settings.lease_seconds + 1)
        await relay.sessions.beat(await relay.sessions.get(PUB, sid), {}, running=[])
        counts = await relay.sweeper.run()
        assert counts["spilled"] == 1 and counts["requeued"] == 1, counts
    for _ in range(100):
        stored = await relay.stores.tasks.get(task.id, relay.clock())
        if stored is not None and stored.state is TaskState.PENDING:
            break
        await anyio.sleep(0.05)
    assert stored is not None and stored.state is TaskState.PENDING, (answered, stored)
    assert not relay.tasks.holds(task.id)


async def test_the_row_cache_is_emptied_by_every_write_of_this_process(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    stores = Stores.on(client, "Llms", "Tasks", "Keys", row_cache_seconds=5)
    relay = build_relay(settings, stores, clock=clock)
    sid = await register(relay, spec("a"))
    counter = OpCounter(client)
    first = await stores.llms.get("a")
    again = await stores.llms.get("a")
    assert first == again and counter.ops == ["GetItem"]
    clock.advance(1)
    await relay.sessions.beat(await relay.sessions.get(PUB, sid), {})
    counter.ops.clear()
    fresh = await stores.llms.get("a")
    assert counter.ops == ["GetItem"] and fresh is not None and fresh != first


def test_a_read_that_began_before_a_write_is_not_kept() -> None:
    cache = RowCache(10)
    version = cache.version
    cache.clear()  # a write while the read was on its way
    cache.put("a", None, version)
    assert cache.get("a") == (False, None)


@pytest.mark.parametrize("alone", [False, True])
async def test_a_queue_just_found_empty_is_not_queried_again_until_a_task_is_queued(
    client: Any, settings: Settings, clock: FakeClock, alone: bool
) -> None:
    # alone on its tables: the fast path on and its own sweeper (as natrelay dev runs)
    sweep = 10 if alone else 0
    quick = settings.model_copy(
        update={"poll_max_interval_seconds": 0.3, "sweep_interval_seconds": sweep}
    )
    relay = build_relay(quick, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    sid = await register(relay, spec("a"))
    assert await claim(relay, sid) == []  # looked: empty
    counter = OpCounter(client)
    assert await claim(relay, sid) == [] and "Query" not in counter.ops
    # queued by this process: heard of at once
    mine = await relay.queue.submit(CLIENT, "a", CHAT, stream=False, fast=False)
    assert [t.id for t in await claim(relay, sid)] == [mine.id]
    assert await claim(relay, sid) == []
    # queued by another process (another relay on the same tables): not heard of, so the
    # memory lasts no longer than an idle poll's slowest re-check — unless this process
    # is alone on its tables and sweeps them: then a 30 s safety net
    other = build_relay(quick, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    theirs = await other.queue.submit(CLIENT, "a", CHAT, stream=False, fast=False)
    assert await claim(relay, sid) == []
    clock.advance(0.35)
    if alone:
        assert await claim(relay, sid) == []
        clock.advance(ALONE_RECHECK_SECONDS - 0.35)
    assert [t.id for t in await claim(relay, sid)] == [theirs.id]


async def test_without_signals_every_poll_reads_the_queue(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    lambda_like = settings.model_copy(update={"mode": "lambda"})
    relay = build_relay(lambda_like, Stores.on(client, "Llms", "Tasks", "Keys"), clock=clock)
    sid = await register(relay, spec("a"))
    assert await claim(relay, sid) == []
    counter = OpCounter(client)
    assert await claim(relay, sid) == [] and "Query" in counter.ops


async def test_a_poll_writes_out_handed_tasks_past_their_lease(
    relay: Relay, clock: FakeClock
) -> None:
    sid, task = await handed(relay, stream=False)  # its poll's answer is lost on the way
    clock.advance(relay.settings.lease_seconds + 1)
    await relay.sessions.beat(await relay.sessions.get(PUB, sid), {}, running=[])
    assert await claim(relay, sid) == []  # the next poll of any session
    assert not relay.tasks.holds(task.id)
    stored = await relay.stores.tasks.get(task.id, relay.clock())
    assert stored is not None and stored.state is TaskState.CLAIMED  # the sweep's now
