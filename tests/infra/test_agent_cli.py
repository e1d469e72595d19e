"""`natrelay agent ...` as an admin runs it, against a live `natrelay dev --demo`: the
YAML round trip, one-line refusals that apply nothing, and the agent answering."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from natrelay_infra.dev import DEV_CLIENT_TOKEN
from tests.infra.test_dev import Dev, admin_cli, natrelay_dev

pytestmark = pytest.mark.slow

AGENT = """\
name: greeter
target: echo
systemPrompt: {file: prompts/greeter.md}
defaults: {temperature: 0.3, max_tokens: 32}
description: says hello
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    with natrelay_dev(tmp_path_factory.mktemp("agent-cli"), "--demo") as running:
        running.publisher_pid()
        running.wait_for(r"^demo ready")
        yield running


def agent(dev: Dev, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return admin_cli(dev, "agent", *args, stdin=stdin)


def test_apply_get_round_trip_and_delete(dev: Dev, tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "greeter.md").write_text("Greet warmly.", encoding="utf-8")
    (tmp_path / "agents.yaml").write_text(AGENT, encoding="utf-8")
    made = agent(dev, "apply", "-f", str(tmp_path / "agents.yaml"))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "greeter: created"
    got = agent(dev, "get", "greeter", "-o", "yaml")
    assert got.returncode == 0, got.stderr
    shown = yaml.safe_load(got.stdout)
    assert shown["systemPrompt"] == "Greet warmly." and shown["target"] == "echo"
    assert shown["status"] == "active" and shown["origin"] == "admin"
    again = agent(dev, "apply", "-f", "-", stdin=got.stdout)
    assert (again.returncode, again.stdout.strip()) == (0, "greeter: unchanged"), again.stderr
    listed = agent(dev, "list")
    assert "greeter" in listed.stdout and "echo" in listed.stdout and "active" in listed.stdout
    changed = agent(dev, "apply", "-f", "-", stdin=got.stdout.replace("0.3", "0.5"))
    assert changed.stdout.strip() == "greeter: updated (defaults)", changed.stdout

    client = openai.OpenAI(base_url=f"{dev.url}/v1", api_key=DEV_CLIENT_TOKEN, max_retries=0)
    answer = client.chat.completions.create(
        model="greeter", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model == "greeter" and answer.choices[0].message.content

    assert agent(dev, "delete", "greeter").returncode == 0
    gone = agent(dev, "get", "greeter")
    assert gone.returncode != 0 and "no agent 'greeter'" in gone.stderr


def test_a_bad_document_is_one_line_and_applies_nothing(dev: Dev, tmp_path: Path) -> None:
    good = {"name": "first", "target": "echo"}
    bad = {"name": "second", "target": "echo", "defaults": {"temperature": 9}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]), encoding="utf-8")
    refused = agent(dev, "apply", "-f", str(path))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"natrelay: {path}: document 2 (second): defaults.temperature: "
        "Input should be less than or equal to 2"
    ]
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: third\ntarget: echo\nsystemPrompt: {file: nope.md}\n")
    refused = agent(dev, "apply", "-f", str(missing))
    assert refused.returncode == 2
    assert "document 1 (third): systemPrompt: cannot read nope.md" in refused.stderr
    listed = agent(dev, "list", "-o", "json")
    assert [a["name"] for a in json.loads(listed.stdout)] == []
    # a name the publisher owns
    taken = agent(dev, "apply", "-f", "-", stdin="name: echo\ntarget: echo-sleepy\n")
    assert taken.returncode != 0 and "echo" in taken.stderr


def test_llm_apply_ignores_a_provider_session_id(dev: Dev) -> None:
    got = admin_cli(dev, "llm", "get", "echo", "-o", "yaml")
    assert got.returncode == 0, got.stderr
    stdin = got.stdout + "providerSessionId: sess-0123456789\n"
    applied = admin_cli(dev, "llm", "apply", "-f", "-", stdin=stdin)
    assert (applied.returncode, applied.stdout.strip()) == (0, "echo: unchanged"), applied.stderr
