"""`agents:` in the publisher's config: read with their prompt files, refused with the
file, field and reason, and published with the registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from natrelay.wire import AgentSpec, ModelTarget, ProviderSpec, RegisterRequest
from natrelay_publisher.config import load_config, parse_config
from natrelay_publisher.errors import ConfigError

RELAY = {"url": "https://relay.example.com", "token": "t0ken"}
ECHO = {"name": "echo", "type": "echo"}


def config(*agents: dict[str, Any]) -> dict[str, Any]:
    return {"relay": RELAY, "providers": [ECHO], "agents": list(agents)}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "publisher.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_an_agent_s_prompt_file_is_read_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "support.md").write_text("You are kind.\n", encoding="utf-8")
    agent = {
        "name": "support-bot",
        "target": "echo",
        "systemPrompt": {"file": "prompts/support.md"},
        "defaults": {"temperature": 0.2, "max_tokens": 64, "stop": ["END"]},
        "description": "support",
    }
    pool = {"name": "pool-bot", "target": {"model": "llama3.1:8b"}, "systemPrompt": "Hi."}
    loaded = load_config(write(tmp_path, config(agent, pool)))
    bot, pooled = (a.spec() for a in loaded.agents)
    assert (bot.name, bot.target, bot.system_prompt) == ("support-bot", "echo", "You are kind.\n")
    assert bot.defaults.given() == {"temperature": 0.2, "max_tokens": 64, "stop": ["END"]}
    assert pooled.target == ModelTarget(model="llama3.1:8b") and pooled.system_prompt == "Hi."


BAD = [
    (
        {"name": "bot", "target": "echo", "systemPrompt": {"file": "missing.md"}},
        "agents[0].systemPrompt: cannot read missing.md: FileNotFoundError",
    ),
    (
        {"name": "bot", "target": "echo", "defaults": {"temperature": 5}},
        "agents[0].defaults.temperature: Input should be less than or equal to 2",
    ),
    (
        {"name": "bot", "target": "echo", "defaults": {"temprature": 0.1}},
        "agents[0].defaults.temprature: Extra inputs are not permitted",
    ),
    (
        {"name": "bot", "target": {"modle": "x"}},
        "agents[0].target: give a provider's name (gemma) or a backend model ({model: …})",
    ),
    ({"name": "echo", "target": "echo"}, "agents[0].name: 'echo' is already a name"),
    ({"name": "bot", "traget": "echo"}, "agents[0].traget: unknown key; did you mean target?"),
]


@pytest.mark.parametrize(("agent", "said"), BAD)
def test_a_bad_agent_is_one_line_naming_the_file_and_field(
    tmp_path: Path, agent: dict[str, Any], said: str
) -> None:
    path = write(tmp_path, config(agent))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert said in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_agents_are_optional() -> None:
    assert parse_config({"relay": RELAY, "providers": [ECHO]}).agents == []


def test_a_registration_without_agents_does_not_send_the_field() -> None:
    """A relay from before agents refuses unknown fields: without agents, the publisher's
    registration is what it was."""
    provider = ProviderSpec(name="echo", type="echo", model="echo")
    plain = RegisterRequest(providers=[provider]).model_dump(mode="json", by_alias=True)
    assert "agents" not in plain
    agent = AgentSpec(name="bot", target="echo")
    sent = RegisterRequest(providers=[provider], agents=[agent])
    assert sent.model_dump(mode="json", by_alias=True)["agents"][0]["name"] == "bot"
