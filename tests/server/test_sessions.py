"""Publisher sessions: register, take over, heartbeat, deregister."""

from __future__ import annotations

import pytest

from natrelay.errors import (
    PublisherOfflineError,
    SessionForbiddenError,
    SessionNotFoundError,
)
from natrelay.service import Relay
from natrelay.web import views
from natrelay.wire import HeartbeatRequest, LlmStatus, SessionRequest, TaskState
from tests.server.conftest import CHAT, CLIENT, PUB, FakeClock, register, spec

pytestmark = pytest.mark.anyio


async def test_register_creates_virtual_rows_with_their_initial_status(
    relay: Relay,
) -> None:
    sid = await register(relay, spec("a"), spec("b", LlmStatus.HIBERNATING, wake=30))
    rows = {r.name: r for r in await relay.catalog.all(CLIENT)}
    assert rows["a"].status is LlmStatus.ACTIVE
    assert rows["b"].status is LlmStatus.HIBERNATING
    assert {r.kind for r in rows.values()} == {"virtual"}
    assert {r.session_id for r in rows.values()} == {sid}
    assert rows["a"].last_heartbeat_at is not None


async def test_restart_with_the_same_session_takes_rows_back(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    first = await relay.sessions.get(PUB, sid)
    clock.advance(10)
    again = await register(relay, spec("a"), session=sid)
    assert again == sid
    assert (await relay.sessions.get(PUB, sid)).generation == first.generation + 1
    rows = [views.row_view(r, clock.now) for r in await relay.catalog.all(CLIENT)]
    assert [r.name for r in rows] == ["a"]
    # taken back, not created anew: it keeps when it was first published
    assert rows[0].created_at == views.iso(clock.now - 10)
    assert rows[0].last_heartbeat_at == views.iso(clock.now)


async def test_another_session_of_the_key_joins_the_pool(relay: Relay, clock: FakeClock) -> None:
    first = await register(relay, spec("a"))
    second = await register(relay, spec("fresh"), spec("a"))
    row = await relay.catalog.get(CLIENT, "a")
    assert set(row.members) == {first, second}
    assert [r.name for r in await relay.catalog.all(CLIENT)] == ["a", "fresh"]
    # one member stops heartbeating: the pool serves on with the other
    clock.advance(relay.settings.heartbeat_timeout_seconds / 2)
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=second))
    clock.advance(relay.settings.heartbeat_timeout_seconds / 2 + 1)
    row = await relay.catalog.get(CLIENT, "a")
    assert [m.session_id for m in row.live_members(clock.now, 90)] == [second]
    assert relay.catalog.status(row) is LlmStatus.ACTIVE
    # the next heartbeat of the live member drops the dead one from the pool
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=second))
    assert set((await relay.catalog.get(CLIENT, "a")).members) == {second}


async def test_a_member_that_went_quiet_comes_back_into_its_pool(
    relay: Relay, clock: FakeClock
) -> None:
    old = await register(relay, spec("a"))
    clock.advance(relay.settings.heartbeat_timeout_seconds + 1)
    new = await register(relay, spec("a"))
    assert new != old
    await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=old))
    row = await relay.catalog.get(CLIENT, "a")
    assert {m.session_id for m in row.live_members(clock.now, 90)} == {old, new}


async def test_heartbeat_refreshes_rows_and_records_reported_status(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"), spec("b", LlmStatus.HIBERNATING, wake=30))
    clock.advance(30)
    resp = await relay.sessions.heartbeat(
        PUB, HeartbeatRequest(provider_session_id=sid, statuses={"a": LlmStatus.HIBERNATING})
    )
    by_name = {r.name: r for r in resp.rows}
    assert by_name["a"].status is LlmStatus.HIBERNATING
    assert by_name["b"].status is LlmStatus.HIBERNATING
    row = await relay.catalog.get(CLIENT, "a")
    assert row.last_heartbeat_at == pytest.approx(clock.now)


async def test_heartbeat_of_an_unknown_session_is_forbidden_like_another_keys(
    relay: Relay,
) -> None:
    with pytest.raises(SessionForbiddenError):
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id="nosuchsession"))


async def test_deleted_row_makes_the_heartbeat_ask_for_a_new_registration(
    relay: Relay,
) -> None:
    sid = await register(relay, spec("a"))
    await relay.catalog.delete("a")
    with pytest.raises(SessionNotFoundError):
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))


async def test_deregister_marks_rows_inactive_and_fails_pending_tasks(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    row = await relay.catalog.get(CLIENT, "a")
    assert row.status is LlmStatus.INACTIVE
    assert row.inactive_since == pytest.approx(clock.now)
    done, _ = await relay.waiting.get_with_result(task.id)
    assert done.state is TaskState.FAILED
    assert done.error and done.error["code"] == "publisher_offline"
    with pytest.raises(PublisherOfflineError, match="offline"):
        await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
