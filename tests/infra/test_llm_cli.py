"""`natrelay llm ...` as an admin runs it, against a live `natrelay dev --demo`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from natrelay_infra.dev import DEV_CLIENT_TOKEN
from tests.infra.test_dev import Dev, admin_cli, natrelay_dev
from tests.support.backend import FakeBackend
from tests.support.net import serve

UPSTREAM_KEY = "sk-cli-test-0123456789abcdef"
# What changes between two reads of the same rows by themselves.
MOVING = ("lastHeartbeatAt", "members")


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dev]:
    monkeypatch.setenv("CLI_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    with natrelay_dev(
        tmp_path, "--demo", "--secret-from-env", "natrelay/cli-test=CLI_TEST_UPSTREAM_KEY"
    ) as running:
        running.publisher_pid()
        running.wait_for(r"^demo ready")
        yield running


def llm(dev: Dev, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return admin_cli(dev, "llm", *args, stdin=stdin)


def rows(dev: Dev) -> dict[str, dict[str, Any]]:
    listed = llm(dev, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    return {
        r["name"]: {k: v for k, v in r.items() if k not in MOVING}
        for r in json.loads(listed.stdout)
    }


@pytest.mark.slow
def test_get_apply_round_trip_changes_nothing(dev: Dev, tmp_path: Path) -> None:
    before = rows(dev)
    assert set(before) == {"echo", "echo-sleepy"}
    for name in before:
        got = llm(dev, "get", name, "-o", "yaml")
        assert got.returncode == 0, got.stderr
        assert "members:" in got.stdout  # lifecycle and pool fields in what it applies
        applied = llm(dev, "apply", "-f", "-", stdin=got.stdout)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == f"{name}: unchanged"
    everything = llm(dev, "list", "-o", "yaml")
    assert llm(dev, "apply", "-f", "-", stdin=everything.stdout).returncode == 0
    assert rows(dev) == before

    table = llm(dev, "list")
    header, *lines = table.stdout.splitlines()
    assert header.split() == [
        "NAME", "KIND", "STATUS", "MODEL", "MEMBERS", "QUEUE", "LASTHEARTBEATAT",
    ]  # fmt: skip
    assert lines[0].split()[:6] == ["echo", "virtual", "active", "echo", "1", "0"]

    # lifecycle fields in the input are ignored; what admins own is applied
    doc = tmp_path / "echo.yaml"
    doc.write_text(
        "name: echo\nkind: virtual\nstatus: inactive\nlastHeartbeatAt: '2020-01-01T00:00:00Z'\n"
        "createdAt: '2020-01-01T00:00:00Z'\nwaking: true\nqueueDepth: 9\n"
        "members: [{member: abc, status: inactive}]\ndescription: the demo's echo\n"
    )
    applied = llm(dev, "apply", "-f", str(doc))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "echo: updated (description)"
    after = rows(dev)["echo"]
    assert after["status"] == "active" and after["description"] == "the demo's echo"
    assert after["createdAt"] == before["echo"]["createdAt"]
    assert after["waking"] is False


@pytest.mark.slow
def test_bad_documents_are_one_line_exit_2_and_apply_nothing(dev: Dev, tmp_path: Path) -> None:
    cloud = (
        "name: cloud\nkind: public\nbaseUrl: http://127.0.0.1:9/v1\nmodel: m\n"
        "apiKey: {secretsManager: natrelay/cli-test}\n"
    )
    cases = [
        ("name: a\n  b: [\n", "not valid YAML"),
        (f"{cloud}---\nname: echo\ncolour: red\n", "document 2 (echo): colour: Extra inputs"),
        (f"{cloud}---\n- name: echo\n", "document 2: must be a mapping"),
        (f"---\n{cloud}---\nname: echo\nbaseUrl: ftp://x\n", "document 2 (echo): baseUrl:"),
        # refused by the relay (it knows the row): still names the file, document, field
        (f"{cloud}---\nname: echo\nmodel: llama\n", "document 2 (echo): model: its publisher"),
        (f"{cloud}---\nname: ghost\n", "document 2 (ghost): kind: there is no such row"),
        (cloud.replace("cli-test", "missing"), "document 1 (cloud): apiKey: the relay cannot"),
    ]
    for i, (text, needle) in enumerate(cases):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        result = llm(dev, "apply", "-f", str(path))
        assert result.returncode == 2, (text, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"natrelay: {path}"), lines[0]
        assert needle in lines[0], lines[0]
        assert "Traceback" not in result.stderr
    assert "cloud" not in rows(dev)  # the good first documents were not applied either
    bad_yaml = llm(dev, "apply", "-f", "-", stdin="name: a\n---\nname: [b\n")
    assert bad_yaml.returncode == 2
    assert bad_yaml.stderr.startswith("natrelay: <stdin>: document 2, line")


@pytest.mark.slow
def test_a_public_row_from_the_cli_then_delete(dev: Dev, tmp_path: Path) -> None:
    backend = FakeBackend(api_key=UPSTREAM_KEY)
    with serve(backend.app()) as url:
        path = tmp_path / "cloud.yaml"
        path.write_text(
            f"name: cloud\nkind: public\ntype: openai\nbaseUrl: {url}/v1\nmodel: m1\n"
            "apiKey: {secretsManager: natrelay/cli-test}\n---\n"
            "name: echo\nfallbacks: [cloud]\n"
        )
        applied = llm(dev, "apply", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines() == ["cloud: created", "echo: updated (fallbacks)"]
        client = openai.OpenAI(base_url=f"{dev.url}/v1", api_key=DEV_CLIENT_TOKEN, max_retries=0)
        reply = client.chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == backend.text()
        got = llm(dev, "get", "cloud", "-o", "json")
        shown = json.loads(got.stdout)
        assert shown["apiKey"] == {"secretsManager": "natrelay/cli-test"}
        assert shown["status"] == "active" and shown["kind"] == "public"
        assert UPSTREAM_KEY not in got.stdout + llm(dev, "list", "-o", "yaml").stdout
        assert llm(dev, "get", "echo", "-o", "json").stdout.count('"cloud"') == 1
        # a public row round-trips too
        as_yaml = llm(dev, "get", "cloud", "-o", "yaml").stdout
        again = llm(dev, "apply", "-f", "-", stdin=as_yaml)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "cloud: unchanged"
    deleted = llm(dev, "delete", "cloud")
    assert deleted.returncode == 0 and "deleted cloud" in deleted.stdout
    assert "cloud" not in rows(dev)
    missing = llm(dev, "get", "cloud")
    assert missing.returncode == 1 and "404" in missing.stderr
    assert UPSTREAM_KEY not in dev.text()  # nor in the relay's log
