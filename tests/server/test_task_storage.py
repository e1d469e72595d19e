"""The task storage's contract (store.task_storage), held to by both tiers alike: the
durable one in DynamoDB and the memory one in front of it (server mode's fast path).
The service's rules rely on exactly this: the same conditions, the same errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from natrelay.store import (
    Chunk,
    ChunkDiffersError,
    ConditionFailedError,
    Holder,
    MemoryTasks,
    NewTask,
    SameResultError,
    SessionRecord,
    Stores,
    TaskStorage,
)
from natrelay.wire import Priority, TaskKind, TaskState
from tests.server.conftest import FakeClock, OpCounter

pytestmark = pytest.mark.anyio

HOLDER = Holder("s-holder", "pub-a")
SESSION = SessionRecord(
    id=HOLDER.session_id,
    names=("a",),
    statuses={},
    heartbeat_at=0.0,
    generation=1,
    owner=HOLDER.key,
)
OTHER = SessionRecord(
    id="s-other", names=("a",), statuses={}, heartbeat_at=0.0, generation=1, owner="pub-a"
)


@pytest.fixture(params=["durable", "memory"])
def tier(request: pytest.FixtureRequest, client: Any, clock: FakeClock) -> TaskStorage:
    stores = Stores.on(client, "Llms", "Tasks", "Keys")
    durable = stores.durable_tasks()
    if request.param == "durable":
        return durable
    return MemoryTasks(durable, stores.whole_tasks, clock, batch_seconds=0.05)


@pytest.fixture
def stores(client: Any) -> Stores:
    """The same tables, read around either tier."""
    return Stores.on(client, "Llms", "Tasks", "Keys")


def new_task(clock: FakeClock, n: int = 0) -> NewTask:
    now = clock()
    return NewTask(
        id=f"01task{n:020d}",
        kind=TaskKind.INFER,
        llm="a",
        created_at=now,
        expires_at=now + 3600,
        lease_seconds=60,
        request=b'{"messages":[]}',
        client_key="client-a",
        limited=False,
    )


async def result(tier: TaskStorage, task_id: str, holder: Holder, body: bytes, now: float) -> Any:
    return await tier.store_result(
        task_id,
        holder,
        state=TaskState.COMPLETED,
        status=200,
        body=body,
        error=None,
        chunk_count=1,
        now=now,
        expires_at=now + 3600,
    )


async def test_only_its_holder_posts_and_a_refusal_carries_the_task(
    tier: TaskStorage, stores: Stores, clock: FakeClock
) -> None:
    now = clock()
    task = await tier.put_claimed(new_task(clock), SESSION, now)
    assert task.state is TaskState.CLAIMED and task.claimed_by == HOLDER.session_id
    chunk = Chunk(seq=0, data=b"[1]")
    for stranger in (Holder("s-other", HOLDER.key), Holder(HOLDER.session_id, "pub-b")):
        with pytest.raises(ConditionFailedError) as refused:
            await tier.add_chunk(task.id, stranger, chunk, now=now, expires_at=now + 60)
        assert getattr(refused.value.record, "id", None) == task.id
    await tier.add_chunk(task.id, HOLDER, chunk, now=now, expires_at=now + 60)
    await tier.add_chunk(task.id, HOLDER, chunk, now=now, expires_at=now + 60)  # again: fine
    with pytest.raises(ChunkDiffersError):
        await tier.add_chunk(task.id, HOLDER, Chunk(0, b"[2]"), now=now, expires_at=now + 60)
    assert [c.data for c in (await tier.read_stream(task.id, -1, now)).chunks] == [b"[1]"]

    done = await result(tier, task.id, HOLDER, b'{"ok":1}', now)
    assert done.state is TaskState.COMPLETED and done.result_hash
    with pytest.raises(SameResultError):
        await result(tier, task.id, HOLDER, b'{"ok":1}', now)
    with pytest.raises(ConditionFailedError) as other:
        await result(tier, task.id, HOLDER, b'{"ok":2}', now)
    assert not isinstance(other.value, SameResultError)
    with pytest.raises(ConditionFailedError):
        await tier.end_unfinished(
            task.id, TaskState.CANCELLED, status=499, error={}, now=now, expires_at=now + 60
        )

    await tier.drain()  # the memory tier's record, written behind the answer
    stored = await stores.chunks.read_stream(task.id, -1, now)
    assert stored.task is not None and stored.task.state is TaskState.COMPLETED
    assert [c.data for c in stored.chunks] == [b"[1]"]
    assert await stores.tasks.result(stored.task) == b'{"ok":1}'


async def test_a_task_nothing_was_sent_of_goes_back_to_its_pool_in_one_write(
    tier: TaskStorage, stores: Stores, client: Any, clock: FakeClock
) -> None:
    now = clock()
    task = await tier.put_claimed(new_task(clock), SESSION, now)
    with pytest.raises(ConditionFailedError):
        await tier.requeue_if_unsent(task, OTHER.id, now)  # not its holder
    counter = OpCounter(client)
    requeued = await tier.requeue_if_unsent(task, HOLDER.session_id, now)
    assert len(counter.ops) == 1, counter.ops
    assert requeued.state is TaskState.PENDING and requeued.claimed_by is None
    assert [q.id for q in await stores.queues.pending("a", 5)] == [task.id]
    # another member takes it; a late answer of the old holder is refused
    taken = await tier.claim(task.id, OTHER.id, key="pub-a", generation=1, now=now)
    assert taken.claimed_by == OTHER.id
    with pytest.raises(ConditionFailedError) as late:
        await result(tier, task.id, HOLDER, b'{"late":1}', now)
    assert getattr(late.value.record, "claimed_by", None) == OTHER.id


async def test_a_lost_claim_is_requeued_once_and_fences_its_old_holder(
    tier: TaskStorage, stores: Stores, clock: FakeClock
) -> None:
    """Many notice a member lost (waiters, the sweep, a closed doorbell), each with the
    task as it read it: exactly one requeue lands, and none touches a claim made since."""
    now = clock()
    seen = await tier.put_claimed(new_task(clock), SESSION, now)
    requeued = await tier.requeue_if_unsent(seen, HOLDER.session_id, now)
    assert requeued.lost_by == HOLDER.session_id
    with pytest.raises(ConditionFailedError):
        await tier.requeue_if_unsent(seen, HOLDER.session_id, now)  # the second who noticed
    # the same member takes it again (it woke up): the old claim's requeue misses it
    again = await tier.claim(
        task_id := seen.id, HOLDER.session_id, key="pub-a", generation=1, now=now
    )
    assert again.attempts == seen.attempts + 1
    with pytest.raises(ConditionFailedError):
        await tier.requeue_if_unsent(seen, HOLDER.session_id, now)
    current = await tier.get(task_id, now)
    assert current is not None and current.state is TaskState.CLAIMED
    # moved once more, then taken by another member: the old holder's posts are refused,
    # and the refusal says whom it was taken from
    await tier.requeue_if_unsent(again, HOLDER.session_id, now)
    await tier.claim(task_id, OTHER.id, key="pub-a", generation=1, now=now)
    with pytest.raises(ConditionFailedError) as late:
        await tier.add_chunk(task_id, HOLDER, Chunk(0, b"[]"), now=now, expires_at=now + 60)
    record = late.value.record
    assert getattr(record, "lost_by", None) == HOLDER.session_id
    assert getattr(record, "claimed_by", None) == OTHER.id
    await tier.drain()
    stored = await stores.tasks.get(task_id, now)
    assert stored is not None and stored.lost_by == HOLDER.session_id


async def test_a_task_that_sent_something_stays_with_its_holder(
    tier: TaskStorage, clock: FakeClock
) -> None:
    now = clock()
    task = await tier.put_claimed(new_task(clock), SESSION, now)
    await tier.add_chunk(task.id, HOLDER, Chunk(0, b"[]"), now=now, expires_at=now + 60)
    with pytest.raises(ConditionFailedError):
        await tier.requeue_if_unsent(task, HOLDER.session_id, now)
    # what a session holds in memory is listed; DynamoDB lists none (the session says)
    held = [task.id] if isinstance(tier, MemoryTasks) else []
    assert [t.id for t in await tier.held_by(HOLDER.session_id)] == held


async def test_a_spilled_task_is_where_any_process_finds_it(
    tier: TaskStorage, stores: Stores, clock: FakeClock
) -> None:
    now = clock()
    task = await tier.put_claimed(new_task(clock), SESSION, now)
    await tier.spill(task.id)
    stored = await stores.tasks.get(task.id, now)
    assert stored is not None and stored.state is TaskState.CLAIMED
    assert await stores.tasks.request(stored) == b'{"messages":[]}'
    assert await tier.held_by(HOLDER.session_id) == []
    # its holder's result lands on the durable item
    done = await result(tier, task.id, HOLDER, b"{}", now)
    assert done.state is TaskState.COMPLETED


async def test_a_task_read_past_its_lease_is_written_out_for_the_sweep(
    tier: TaskStorage, stores: Stores, clock: FakeClock
) -> None:
    task = await tier.put_claimed(new_task(clock), SESSION, clock())
    clock.advance(61)
    seen = await tier.get(task.id, clock())
    assert seen is not None and seen.state is TaskState.CLAIMED
    assert await stores.leases.expired(clock()) == [task.id]


async def test_a_requeued_task_keeps_its_class_and_its_place_in_it(
    tier: TaskStorage, stores: Stores, clock: FakeClock
) -> None:
    now = clock()
    batch = replace(
        new_task(clock, 1),
        priority=Priority.BATCH,
        queue_order=now + 60,
        prefer="s-holder",
        prefer_until=now + 5,
    )
    waiting = replace(new_task(clock, 2), queue_order=now + 1)  # interactive, queued later
    await tier.put(waiting)
    task = await tier.put_claimed(batch, SESSION, now)
    requeued = await tier.requeue_if_unsent(task, HOLDER.session_id, now)
    assert requeued.priority is Priority.BATCH and requeued.queue_order == now + 60
    queued = await stores.queues.pending("a", 5)
    assert [(q.id, q.priority) for q in queued] == [
        (waiting.id, Priority.INTERACTIVE),
        (batch.id, Priority.BATCH),
    ]
    # the member it was meant for did not run it: any member may now
    assert queued[1].prefer is None and queued[1].queued_at == now


async def test_a_task_meant_for_a_member_is_its_alone_until_its_moment_is_over(
    tier: TaskStorage, clock: FakeClock
) -> None:
    now = clock()
    meant = replace(new_task(clock), prefer=OTHER.id, prefer_until=now + 2)
    await tier.put(meant)
    with pytest.raises(ConditionFailedError):  # even claimed by its id (a doorbell's ring)
        await tier.claim(meant.id, HOLDER.session_id, key="pub-a", generation=1, now=now + 1)
    taken = await tier.claim(meant.id, HOLDER.session_id, key="pub-a", generation=1, now=now + 3)
    assert taken.claimed_by == HOLDER.session_id
