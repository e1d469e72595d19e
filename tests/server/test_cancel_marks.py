"""A task the relay cancels is marked on the session that runs it, and that session's next
work beat or heartbeat takes the mark in its own write (service.abandoned, store.sessions
`mark_cancelled`): a busy publisher hears within one work beat, at no request of its own,
whatever the pace of the backstop read."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from natrelay.errors import SessionForbiddenError
from natrelay.service import Principal, Relay
from natrelay.wire import HeartbeatRequest, RegisterRequest, Role
from tests.server.conftest import CHAT, CLIENT, PUB, OpCounter, claim, spec

pytestmark = pytest.mark.anyio

OTHER_KEY = Principal(key_id="pub-b", role=Role.PUBLISHER)


async def busy_member(relay: Relay) -> tuple[str, str]:
    """A session of PUB running one claimed task, whose backstop read just ran."""
    registration = await relay.sessions.register(
        PUB, RegisterRequest(providers=[spec("a")], work_beats=True)
    )
    sid = registration.session.id
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    [polled] = await claim(relay, sid)
    assert polled.id == task.id
    # a beat that checks it (the paced read): wanted; the next read is CHECK_SECONDS away
    assert await work_beat(relay, sid, task.id) == []
    return sid, task.id


async def work_beat(
    relay: Relay, session: str, *running: str, principal: Principal = PUB
) -> list[str]:
    """A work beat as the route answers it: the tasks to stop."""
    req = HeartbeatRequest(provider_session_id=session, running=list(running), work=True)
    told = await relay.sessions.work_beat(principal, req)
    return await relay.abandoned.of(session, req.running, told)


async def heartbeat(relay: Relay, session: str, *running: str) -> list[str]:
    req = HeartbeatRequest(provider_session_id=session, running=list(running))
    registration = await relay.sessions.heartbeat(PUB, req)
    return await relay.abandoned.of(session, req.running, registration.cancelled)


async def test_the_next_work_beat_says_stop_in_its_one_write(relay: Relay, client: Any) -> None:
    sid, task_id = await busy_member(relay)
    await relay.endings.cancel(task_id)  # the client hung up
    counter = OpCounter(client)
    assert await work_beat(relay, sid, task_id) == [task_id]
    assert counter.ops == ["UpdateItem"]  # the beat's own write, nothing read
    # taken: the next beat (the publisher still says it runs it) reads nothing either
    counter.reset()
    assert await work_beat(relay, sid, task_id) == []
    assert counter.ops == ["UpdateItem"]


async def test_the_slow_heartbeat_takes_the_marks_too(relay: Relay) -> None:
    sid, task_id = await busy_member(relay)
    await relay.endings.cancel(task_id)
    assert await heartbeat(relay, sid, task_id) == [task_id]
    assert await work_beat(relay, sid, task_id) == []


async def test_a_mark_of_a_task_it_no_longer_runs_is_dropped(relay: Relay) -> None:
    sid, task_id = await busy_member(relay)
    await relay.endings.cancel(task_id)
    assert await work_beat(relay, sid) == []  # it finished meanwhile: nothing to stop
    session = await relay.stores.sessions.get(sid)
    assert session is not None  # and the mark does not pile up on the session
    assert await relay.stores.sessions.work_beat(sid, PUB.key_id, relay.clock(), 0, []) == []


async def test_only_its_own_session_and_key_take_the_marks(relay: Relay) -> None:
    sid, task_id = await busy_member(relay)
    await relay.endings.cancel(task_id)
    # another key naming the session is refused and takes nothing
    with pytest.raises(SessionForbiddenError):
        await work_beat(relay, sid, task_id, principal=OTHER_KEY)
    with pytest.raises(SessionForbiddenError):
        await relay.sessions.heartbeat(
            OTHER_KEY, HeartbeatRequest(provider_session_id=sid, running=[task_id])
        )
    # another session of the same key has no marks of this session's tasks
    other = await relay.sessions.register(PUB, RegisterRequest(providers=[spec("b")]))
    req = HeartbeatRequest(provider_session_id=other.session.id, running=[task_id], work=True)
    assert await relay.sessions.work_beat(PUB, req) == []
    # the mark is still there for its own publisher
    assert await work_beat(relay, sid, task_id) == [task_id]


def marks(client: Any, session: str) -> set[str]:
    """The cancel marks on the session's item, as the table holds them."""
    item = client.get_item(
        TableName="Tasks", Key={"pk": {"S": f"session#{session}"}, "sk": {"S": "m"}}
    )["Item"]
    return set(item.get("cancelled", {}).get("SS", ()))


async def test_only_a_claimed_task_marks_its_session(relay: Relay, client: Any) -> None:
    sid, task_id = await busy_member(relay)
    queued = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)  # nobody claimed it
    await relay.endings.cancel(queued.id)
    assert marks(client, sid) == set()
    await relay.endings.cancel(task_id)
    await relay.endings.cancel(task_id)  # a second cancel of a done task changes nothing
    assert marks(client, sid) == {task_id}


async def test_a_cancel_after_its_session_left_is_only_logged(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "natrelay.service")
    sid, task_id = await busy_member(relay)
    await relay.stores.sessions.delete(sid)  # it vanished (the item expired, or was deleted)
    await relay.endings.cancel(task_id)
    task = await relay.tasks.get(task_id, relay.clock())
    assert task is not None and task.state.value == "cancelled"
    assert f"task {task_id}: its session is gone" in caplog.text
    assert sid not in caplog.text
