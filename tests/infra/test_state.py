"""Durable local state: the embedded moto's journal, and `natrelay dev` across restarts
(Ctrl-C and kill -9), with secrets put while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from botocore.exceptions import ClientError

from natrelay_infra.dev import DEV_ADMIN_TOKEN, DEV_CLIENT_TOKEN
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames, create_tables
from tests.infra.test_dev import Dev, _natrelay, admin_cli, natrelay_dev
from tests.support.backend import FakeBackend
from tests.support.net import serve, wait_until
from tests.support.stack import dynamodb_client

UPSTREAM_KEY = "sk-state-test-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello"}]


def _client(service: str, endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(service, endpoint_url=endpoint)  # type: ignore[call-overload]


def _killed(moto: MotoProcess) -> None:
    os.kill(moto.pid, signal.SIGKILL)
    assert moto._process is not None
    moto._process.wait(timeout=10)


# --- the journal ------------------------------------------------------------------------


def test_moto_state_survives_kill_9_conditions_counters_secrets_and_ttl(tmp_path: Path) -> None:
    state = tmp_path / "state"
    names = TableNames.with_prefix("st-")
    with MotoProcess(state=state) as moto:
        ddb = dynamodb_client(moto.endpoint)
        create_tables(ddb, names)
        keys = names.keys
        for i in range(60):  # more than one BatchWriteItem of the snapshot
            ddb.put_item(TableName=keys, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "v"}})
        counter = {"pk": {"S": "counter"}, "sk": {"S": "v"}}
        for _ in range(3):
            ddb.update_item(
                TableName=keys,
                Key=counter,
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        # a condition that failed changed nothing: it must not be replayed as a success
        with pytest.raises(ClientError, match="ConditionalCheckFailed"):
            ddb.put_item(
                TableName=keys,
                Item={"pk": {"S": "k1"}, "sk": {"S": "v"}, "lost": {"BOOL": True}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        ddb.delete_item(TableName=keys, Key={"pk": {"S": "k2"}, "sk": {"S": "v"}})
        old = {"pk": {"S": "old"}, "sk": {"S": "v"}, "expiresAt": {"N": str(int(time.time()) - 5)}}
        ddb.put_item(TableName=keys, Item=old)
        secrets = _client("secretsmanager", moto.endpoint)
        secrets.create_secret(Name="natrelay/one", SecretString="first")
        secrets.put_secret_value(SecretId="natrelay/one", SecretString="second")
        _client("ssm", moto.endpoint).put_parameter(
            Name="/natrelay/p", Value="param", Type="SecureString"
        )
        _killed(moto)  # no clean stop: what was answered is in the journal

    for _ in range(2):  # a restart, then a restart of the restart (from its snapshot)
        with MotoProcess(state=state) as moto:
            ddb = dynamodb_client(moto.endpoint)
            items = ddb.scan(TableName=names.keys)["Items"]
            pks = {item["pk"]["S"] for item in items}
            assert {f"k{i}" for i in range(60)} - {"k2"} <= pks
            # deleted, and (once compacted at start) what DynamoDB's TTL would have deleted
            assert "k2" not in pks, pks
            assert "old" not in pks, pks
            got = ddb.get_item(TableName=names.keys, Key=counter)["Item"]
            assert got["n"] == {"N": "3"}
            k1 = ddb.get_item(TableName=names.keys, Key={"pk": {"S": "k1"}, "sk": {"S": "v"}})
            assert "lost" not in k1["Item"]
            tasks = ddb.describe_table(TableName=names.tasks)["Table"]
            assert {i["IndexName"] for i in tasks["GlobalSecondaryIndexes"]}
            ttl = ddb.describe_time_to_live(TableName=names.tasks)["TimeToLiveDescription"]
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            value = _client("secretsmanager", moto.endpoint).get_secret_value(
                SecretId="natrelay/one"
            )
            assert value["SecretString"] == "second"
            parameter = _client("ssm", moto.endpoint).get_parameter(
                Name="/natrelay/p", WithDecryption=True
            )
            assert parameter["Parameter"]["Value"] == "param"
    assert sorted(p.name.split(".")[0] for p in state.iterdir()) == ["journal", "snapshot"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in [state, *state.iterdir()])


def test_a_torn_last_line_is_replayed_up_to_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with MotoProcess(state=state) as moto:
        ddb = dynamodb_client(moto.endpoint)
        create_tables(ddb, TableNames.with_prefix("torn-"))
        ddb.put_item(TableName="torn-Keys", Item={"pk": {"S": "kept"}, "sk": {"S": "v"}})
        _killed(moto)
    (journal,) = state.glob("journal.*.jsonl")
    with journal.open("ab") as out:
        out.write(b'{"t":"DynamoDB_20120810.PutItem","b":"{\\"TableN')  # a crash mid-write
    with MotoProcess(state=state) as moto:
        items = dynamodb_client(moto.endpoint).scan(TableName="torn-Keys")["Items"]
        assert [item["pk"]["S"] for item in items] == ["kept"]


# --- natrelay dev -----------------------------------------------------------------------


def _ask(dev: Dev, key: str, model: str) -> str | None:
    client = openai.OpenAI(base_url=f"{dev.url}/v1", api_key=key, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    return reply.choices[0].message.content


def _usage(dev: Dev, key_id: str) -> int:
    shown = admin_cli(dev, "keys", "usage", key_id, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    return sum(day["requests"] for view in json.loads(shown.stdout) for day in view["days"])


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_dev_keeps_keys_rows_usage_and_secrets_across_a_restart(
    tmp_path: Path, stop: signal.Signals
) -> None:
    state = tmp_path / "kept"
    backend = FakeBackend(api_key=UPSTREAM_KEY)
    with serve(backend.app()) as upstream:
        with natrelay_dev(tmp_path, "--state-dir", str(state)) as dev:
            dev.wait_for(r"^Ctrl-C stops everything")
            assert f"state:            {state}" in dev.text()
            created = admin_cli(
                dev, "keys", "create", "--role", "client", "--label", "bob", "-o", "json"
            )
            key = json.loads(created.stdout)
            put = admin_cli(dev, "secrets", "put", "natrelay/cloud", stdin=UPSTREAM_KEY + "\n")
            assert put.returncode == 0 and put.stdout.strip() == "secret natrelay/cloud created"
            row = (
                f"name: cloud\nkind: public\nbaseUrl: {upstream}/v1\nmodel: m1\n"
                "apiKey: {secretsManager: natrelay/cloud}\n"
            )
            applied = admin_cli(dev, "llm", "apply", "-f", "-", stdin=row)
            assert applied.returncode == 0, applied.stderr
            assert _ask(dev, key["secret"], "cloud") == backend.text()
            # written behind the answer: once it can be read, a kill must not lose it
            wait_until(lambda: _usage(dev, key["id"]) == 1, 10, "usage not recorded")
            if stop == signal.SIGKILL:
                os.killpg(dev.process.pid, signal.SIGKILL)  # the whole of it, at once
                dev.process.wait(timeout=10)
            else:
                assert dev.stop(signal.SIGINT) == 0
        assert not (state / "lock").exists() or stop == signal.SIGKILL
        with natrelay_dev(tmp_path, "--state-dir", str(state)) as dev:
            dev.wait_for(r"^Ctrl-C stops everything")
            assert _ask(dev, key["secret"], "cloud") == backend.text()  # key, row and secret
            assert _usage(dev, key["id"]) == 2
            listed = admin_cli(dev, "keys", "list", "-o", "json")
            assert [k["label"] for k in json.loads(listed.stdout)] == ["bob"]
    assert UPSTREAM_KEY not in dev.text()


@pytest.mark.slow
def test_ephemeral_starts_empty_and_a_held_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "kept"
    with natrelay_dev(tmp_path, "--state-dir", str(state)) as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        assert admin_cli(dev, "keys", "create", "--role", "client", "--label", "x").returncode == 0
        second = subprocess.run(
            [*_natrelay(), "dev", "--port", "0", "--state-dir", str(state)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"{state} is in use by natrelay dev (pid {dev.process.pid})" in second.stderr
        assert "--ephemeral" in second.stderr
    throwaway = tmp_path / "throwaway"
    throwaway.mkdir()
    with natrelay_dev(throwaway, "--ephemeral") as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        assert "state:            in memory only (--ephemeral)" in dev.text()
        listed = admin_cli(dev, "keys", "list", "-o", "json")
        assert json.loads(listed.stdout) == []


@pytest.mark.slow
def test_secrets_put_is_for_admins_and_refuses_bad_names(tmp_path: Path) -> None:
    with natrelay_dev(tmp_path, "--ephemeral") as dev:
        dev.wait_for(r"^Ctrl-C stops everything")
        url = f"{dev.url}/api/v1/secrets/natrelay/x"
        as_client = httpx.put(
            url, json={"value": "v"}, headers={"Authorization": f"Bearer {DEV_CLIENT_TOKEN}"}
        )
        assert as_client.status_code == 403
        admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
        bad = httpx.put(f"{dev.url}/api/v1/secrets/openai", json={"value": "v"}, headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
        empty = httpx.put(url, json={"value": ""}, headers=admin)
        assert empty.status_code == 400
        created = httpx.put(url, json={"value": "very-secret"}, headers=admin)
        assert created.status_code == 201 and created.json() == {
            "name": "natrelay/x",
            "created": True,
        }
        again = httpx.put(url, json={"value": "very-secret-2"}, headers=admin)
        assert again.status_code == 200 and again.json()["created"] is False
        no_value = admin_cli(dev, "secrets", "put", "natrelay/y", stdin="")
        assert no_value.returncode == 2 and "no value" in no_value.stderr
    assert "very-secret" not in dev.text()
