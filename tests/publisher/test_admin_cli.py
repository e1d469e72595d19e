"""`natrelay keys ...` as a user runs it: the console script against a real relay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.scripted import ScriptedPublisher
from tests.support.stack import Stack

NATRELAY = Path(sys.executable).parent / "natrelay"


def natrelay(
    stack: Stack, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"NATRELAY_URL": stack.url, "NATRELAY_ADMIN_TOKEN": token or stack.admin_token}
    return subprocess.run(
        [str(NATRELAY), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_create_list_get_usage_revoke(stack: Stack) -> None:
    made = natrelay(stack, "keys", "create", "--role", "client", "--label", "alice", "--rpm", "60")
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(":", 1) for line in made.stdout.splitlines())
    key_id, secret = fields["id"].strip(), fields["secret"].strip()
    assert secret.startswith(f"nrk_{key_id}_")
    assert "shown this once" in made.stderr

    quiet = natrelay(
        stack, "keys", "create", "--role", "publisher", "--label", "box", "--quiet",
        "--models", "echo,llama-*", "--expires", "30d", "--priority", "batch",
    )  # fmt: skip
    assert quiet.returncode == 0 and quiet.stdout.strip().startswith("nrk_")
    assert len(quiet.stdout.strip().splitlines()) == 1

    listed = natrelay(stack, "keys", "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:5] == ["ID", "ROLE", "LABEL", "STATUS", "EXPIRESAT"]
    assert any(row.split()[:4] == [key_id, "client", "alice", "active"] for row in rows)
    box = next(row.split() for row in rows if " box " in row)
    assert box[4].startswith("20") and box[4].endswith("Z")  # when it expires (30 days)
    assert secret not in listed.stdout
    as_json = json.loads(natrelay(stack, "keys", "list", "-o", "json").stdout)
    assert {k["label"] for k in as_json} == {"alice", "box"}
    assert [k["models"] for k in as_json if k["label"] == "box"] == [["echo", "llama-*"]]
    assert {k["label"]: k["priority"] for k in as_json} == {"alice": "interactive", "box": "batch"}

    got = natrelay(stack, "keys", "get", key_id)
    assert "rpm:" in got.stdout and "60" in got.stdout

    slow = natrelay(stack, "keys", "create", "--role", "client", "--label", "slow", "--rpm", "1")
    slow_secret = dict(line.split(":", 1) for line in slow.stdout.splitlines())["secret"].strip()
    with ScriptedPublisher(
        stack.url, stack.publish_token, [{"name": "echo", "type": "echo", "model": "e"}]
    ):
        for token, status in ((secret, 200), (slow_secret, 200), (slow_secret, 429)):
            answer = httpx.post(
                f"{stack.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            assert answer.status_code == status, answer.text
    usage = natrelay(stack, "keys", "usage", key_id, "-o", "json")
    assert json.loads(usage.stdout)[0]["days"][0]["requests"] == 1
    header, *lines = natrelay(stack, "keys", "usage").stdout.splitlines()
    assert header.split() == [
        "KEY", "LABEL", "DATE", "REQUESTS", "PROMPTTOKENS", "COMPLETIONTOKENS", "ERRORS", "REFUSED",
    ]  # fmt: skip
    cells = {line.split()[1]: line.split() for line in lines}
    assert cells["alice"][0] == key_id and cells["alice"][3] == "1"
    assert cells["slow"][3] == "1" and cells["slow"][7] == "1"  # one served, one refused

    revoked = natrelay(stack, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stdout
    assert "revoked" in natrelay(stack, "keys", "get", key_id).stdout


def test_errors_are_one_line_and_a_non_zero_exit(stack: Stack) -> None:
    create = ("keys", "create", "--label", "x")
    cases = [
        (("keys", "list"), {"token": "wrong-token"}, 1, "401"),
        (("keys", "revoke", "nosuchkey"), {}, 1, "404"),
        ((*create, "--role", "client", "--models", "a b"), {}, 2, "glob"),
        ((*create, "--role", "boss"), {}, 2, "invalid choice"),
        ((*create, "--role", "client", "--expires", "1y"), {}, 2, "duration"),
    ]  # fmt: skip
    for args, kw, code, needle in cases:
        result = natrelay(stack, *args, **kw)
        assert result.returncode == code, (args, result.stderr)
        # one line says what is wrong (argparse prints its usage above it)
        assert needle in result.stderr.strip().splitlines()[-1], (args, result.stderr)
        assert "Traceback" not in result.stderr
    # a client key is not an admin's
    secret = natrelay(stack, "keys", "create", "--role", "client", "--label", "c", "-q").stdout
    denied = natrelay(stack, "keys", "list", token=secret.strip())
    assert denied.returncode == 1 and "403" in denied.stderr
    unreachable = subprocess.run(
        [str(NATRELAY), "keys", "list", "--relay", "http://127.0.0.1:9", "--token", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
