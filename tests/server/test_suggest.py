"""An unknown model names what the caller may have meant — never a model outside its
key's scope — and points at GET /v1/models."""

from __future__ import annotations

import httpx
import openai
import pytest

from natrelay.errors import LlmNotFoundError
from natrelay.service import Principal, Relay
from natrelay.wire import ProviderSpec, RegisterRequest, Role
from natrelay.wire.agents import AgentDocument
from tests.server.conftest import PUB
from tests.server.test_web import auth
from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack

pytestmark = pytest.mark.anyio


async def _publish(relay: Relay, *providers: tuple[str, str, list[str]]) -> None:
    specs = [
        ProviderSpec(name=name, type="openai", model=model, aliases=aliases)
        for name, model, aliases in providers
    ]
    await relay.sessions.register(PUB, RegisterRequest(providers=specs))


async def _message(relay: Relay, principal: Principal, name: str) -> str:
    with pytest.raises(LlmNotFoundError) as info:
        await relay.catalog.get(principal, name)
    assert info.value.param == "model"
    return info.value.message


async def test_a_backend_id_names_the_model_it_is_published_as(relay: Relay) -> None:
    await _publish(relay, ("gemma", "gemma3-270m", []), ("llama-8b", "llama3.1:8b", ["llama3"]))
    anyone = Principal(key_id="c", role=Role.CLIENT)
    assert await _message(relay, anyone, "gemma3-270m") == (
        "the model 'gemma3-270m' does not exist; 'gemma3-270m' is what its backend calls "
        "'gemma': ask for 'gemma' (GET /v1/models lists the models this key may use)"
    )
    assert "did you mean 'llama-8b'?" in await _message(relay, anyone, "llama-7b")
    assert "did you mean 'gemma'?" in await _message(relay, anyone, "Gemma")
    assert "did you mean 'llama-8b'?" in await _message(relay, anyone, "llama3.1")
    nothing = await _message(relay, anyone, "mistral-large")
    assert "did you mean" not in nothing and "GET /v1/models" in nothing


async def test_a_model_outside_the_scope_is_never_named(relay: Relay) -> None:
    await _publish(relay, ("secret-gemma", "gemma3-270m", []), ("llama-8b", "llama3", []))
    scoped = Principal(key_id="c", role=Role.CLIENT, models=("llama-*",))
    for name in ("gemma3-270m", "secret-gemma", "secret-gemm", "gemma"):
        message = await _message(relay, scoped, name)
        assert "secret-gemma" not in message.removeprefix(f"the model {name!r}"), message


async def test_an_agent_is_named_as_a_model_is(relay: Relay) -> None:
    await _publish(relay, ("gemma", "gemma3-270m", []))
    bot = {"name": "support-bot", "target": "gemma", "systemPrompt": "Be brief."}
    await relay.agents.apply([AgentDocument.model_validate(bot)])
    anyone = Principal(key_id="c", role=Role.CLIENT)
    assert await _message(relay, anyone, "support-bto") == (
        "the model 'support-bto' does not exist; did you mean 'support-bot'? "
        "(GET /v1/models lists the models this key may use)"
    )
    # outside the key's scope an agent is never named
    scoped = Principal(key_id="s", role=Role.CLIENT, models=("gemma*",))
    assert "support-bot" not in await _message(relay, scoped, "support-bto")


def test_the_sdk_shows_the_hint(stack: Stack) -> None:
    providers = [{"name": "gemma", "type": "openai", "model": "gemma3-270m"}]
    with ScriptedPublisher(stack.url, stack.publish_token, providers):
        client = openai.OpenAI(
            base_url=f"{stack.url}/v1", api_key=stack.client_token, max_retries=0
        )
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(
                model="gemma3-270m", messages=[{"role": "user", "content": "hi"}]
            )
        assert "ask for 'gemma'" in str(info.value)
        got = httpx.get(f"{stack.url}/v1/models/gema", headers=auth(stack.client_token))
        assert got.status_code == 404 and "did you mean 'gemma'?" in got.json()["error"]["message"]
