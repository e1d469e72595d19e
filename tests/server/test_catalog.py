"""What clients see of the rows: a model its fallback serves stays listed, and a pool's
members' load is what they run now."""

from __future__ import annotations

import pytest

from natrelay.service import Principal, Relay
from natrelay.wire import HeartbeatRequest, LlmDocument, Role, SessionRequest, TaskResult
from tests.server.conftest import CHAT, CLIENT, PUB, claim, register, spec

pytestmark = pytest.mark.anyio


async def _listed(relay: Relay, principal: Principal) -> set[str]:
    return {r.name for r in await relay.catalog.serving_rows(principal)}


async def test_a_model_its_fallback_serves_stays_listed(relay: Relay) -> None:
    home = await register(relay, spec("home"))
    await register(relay, spec("other"))
    await relay.rows.apply([LlmDocument(name="home", fallbacks=["other"])])
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=home))
    assert await _listed(relay, CLIENT) == {"home", "other"}
    # a fallback outside the caller's scope serves nothing for it
    only_home = Principal(key_id="c2", role=Role.CLIENT, models=("home",))
    assert await _listed(relay, only_home) == set()
    other = (await relay.catalog.get(CLIENT, "other")).members
    (sid,) = other
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    assert await _listed(relay, CLIENT) == set()  # nobody serves it any more


async def test_a_member_that_finished_its_task_is_not_shown_busy(relay: Relay) -> None:
    sid = await register(relay, spec("a"))
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)
    await claim(relay, sid)
    beat = HeartbeatRequest(provider_session_id=sid, running=[task.id])
    await relay.sessions.heartbeat(PUB, beat)
    pool = await relay.catalog.pool(CLIENT, "a")
    assert [running for _, running, _ in pool.members] == [1]
    done = TaskResult(provider_session_id=sid, status=200, body={"ok": True})
    await relay.claims.post_result(PUB, task.id, done)
    # the session still lists it until its next heartbeat; the pool knows it ended
    pool = await relay.catalog.pool(CLIENT, "a")
    assert [running for _, running, _ in pool.members] == [0]
