"""Published agents have a row's lifecycle (beaten with their session, retired by the
sweep, deleted after the retention, taken back by a restart, their names the key's);
pools by model reach other keys' rows only where an admin shared them."""

from __future__ import annotations

from typing import Any

import pytest

from natrelay.errors import NameOwnedError
from natrelay.service import Principal, Relay
from natrelay.wire import (
    AgentDocument,
    AgentSpec,
    HeartbeatRequest,
    LlmApply,
    LlmStatus,
    ProviderSpec,
    RegisterRequest,
    Role,
    SessionRequest,
)
from tests.server.conftest import PUB, FakeClock

pytestmark = pytest.mark.anyio

OTHER = Principal(key_id="pub-b", role=Role.PUBLISHER)
BOT = {"name": "bot", "target": "a", "systemPrompt": "Be kind.", "defaults": {"seed": 1}}


def row(name: str, model: str = "llama3.1:8b") -> ProviderSpec:
    return ProviderSpec(name=name, type="openai", model=model)


async def publish(
    relay: Relay,
    *rows: ProviderSpec,
    agents: tuple[dict[str, Any], ...] = (BOT,),
    who: Principal = PUB,
    session: str | None = None,
) -> str:
    registration = await relay.sessions.register(
        who,
        RegisterRequest(
            providers=list(rows),
            agents=[AgentSpec.model_validate(a) for a in agents],
            provider_session_id=session,
        ),
    )
    return registration.session.id


async def agent_status(relay: Relay, name: str = "bot") -> LlmStatus:
    agent = await relay.stores.llms.fresh(name)
    assert agent is not None and agent.agent is not None
    return await relay.agents.status(agent)


async def test_a_published_agent_lives_and_dies_with_its_session(
    relay: Relay, clock: FakeClock
) -> None:
    sid = await publish(relay, row("a"))
    agent = await relay.stores.llms.fresh("bot")
    assert agent is not None and agent.agent is not None
    assert agent.owner == PUB.key_id and agent.agent.published
    assert (agent.agent.target, agent.agent.system_prompt) == ("a", "Be kind.")
    assert agent.agent.defaults == {"seed": 1}
    assert await agent_status(relay) is LlmStatus.ACTIVE
    # its heartbeat keeps it (and its target) alive past the timeout
    timeout = relay.settings.heartbeat_timeout_seconds
    for _ in range(3):
        clock.advance(timeout / 2)
        await relay.sessions.heartbeat(PUB, HeartbeatRequest(provider_session_id=sid))
    assert (await relay.sweeper.run())["inactive"] == 0
    assert await agent_status(relay) is LlmStatus.ACTIVE
    # the publisher goes silent: the sweep retires the agent with the row
    clock.advance(timeout + 1)
    assert (await relay.sweeper.run())["inactive"] == 2
    assert await agent_status(relay) is LlmStatus.INACTIVE
    # a restart takes it back
    assert await publish(relay, row("a"), session=sid) == sid
    assert await agent_status(relay) is LlmStatus.ACTIVE
    # it leaves: the agent is inactive; past the retention it is gone
    await relay.sessions.deregister(PUB, SessionRequest(provider_session_id=sid))
    assert await agent_status(relay) is LlmStatus.INACTIVE
    clock.advance(relay.settings.inactive_retention_seconds + 1)
    await relay.sweeper.run()
    assert await relay.stores.llms.fresh("bot") is None


async def test_a_re_registration_without_the_agent_retires_it(relay: Relay) -> None:
    sid = await publish(relay, row("a"))
    session = await relay.stores.sessions.get(sid)
    assert session is not None and session.agents == ("bot",)
    await publish(relay, row("a"), agents=(), session=sid)
    session = await relay.stores.sessions.get(sid)
    assert session is not None and session.agents == ()
    assert await agent_status(relay) is LlmStatus.INACTIVE


async def test_an_agent_name_is_its_key_s(relay: Relay) -> None:
    await publish(relay, row("a"))
    with pytest.raises(NameOwnedError):
        await publish(relay, row("b"), agents=({**BOT, "target": "b"},), who=OTHER)
    with pytest.raises(NameOwnedError):  # nor as a row
        await publish(relay, row("bot"), agents=(), who=OTHER)
    # an admin cannot apply an agent over it either
    with pytest.raises(NameOwnedError):
        await relay.agents.apply([AgentDocument.model_validate({**BOT, "target": "a"})])


async def test_a_pool_by_model_takes_other_keys_rows_only_where_an_admin_shared_them(
    relay: Relay,
) -> None:
    pool = {**BOT, "target": {"model": "llama3.1:8b"}}
    await publish(relay, row("a"), row("small", model="qwen"), agents=(pool,))
    await publish(relay, row("b"), agents=(), who=OTHER)
    agent = await relay.stores.llms.fresh("bot")
    assert agent is not None
    assert [r.name for r in await relay.agents.rows(agent)] == ["a"]
    shared = LlmApply.model_validate({"documents": [{"name": "b", "sharedPool": True}]})
    [done] = await relay.rows.apply(list(shared.documents))
    assert done.changed == ["sharedPool"]
    assert [r.name for r in await relay.agents.rows(agent)] == ["a", "b"]
    # an admin's agent pools every row of the model
    await relay.agents.apply([AgentDocument.model_validate({**pool, "name": "team-bot"})])
    team = await relay.stores.llms.fresh("team-bot")
    assert team is not None
    assert [r.name for r in await relay.agents.rows(team)] == ["a", "b"]
