"""A local relay's settings: built once, handed to the app or to a child's environment."""

from __future__ import annotations

import os
import socket

import pytest
from pydantic import ValidationError

from natrelay.settings import Settings
from natrelay_infra import dev, dev_args
from natrelay_infra.relay_config import relay_settings, settings_env
from natrelay_infra.tables import TableNames

TABLES = TableNames.with_prefix("cfg-")


def test_given_fields_win_and_the_rest_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATRELAY_LLMS_TABLE", "not-this-one")
    monkeypatch.setenv("NATRELAY_LEASE_SECONDS", "7")
    settings = relay_settings(
        "http://127.0.0.1:1", TABLES, client_token="c" * 20, publish_token="p" * 20, region="x"
    )
    assert (settings.llms_table, settings.tasks_table) == (TABLES.llms, TABLES.tasks)
    assert settings.client_token.get_secret_value() == "c" * 20
    assert (settings.region, settings.lease_seconds) == ("x", 7)


def test_a_child_reads_the_same_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = relay_settings(
        "http://127.0.0.1:1",
        TABLES,
        client_token="c" * 20,
        publish_token="p" * 20,
        mode="lambda",
        poll_min_interval_seconds=0.5,
    )
    env = settings_env(settings)
    assert env["NATRELAY_MODE"] == "lambda"
    assert env["NATRELAY_PUBLISH_TOKEN"] == "p" * 20
    for key in [k for k in os.environ if k.startswith("NATRELAY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_the_old_name_of_the_mode_still_says_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # NATRELAY_IN_PROCESS_SIGNALS=false was how a Lambda deployment said so
    monkeypatch.delenv("NATRELAY_MODE", raising=False)
    monkeypatch.setenv("NATRELAY_IN_PROCESS_SIGNALS", "false")
    assert Settings().mode == "lambda"
    monkeypatch.setenv("NATRELAY_IN_PROCESS_SIGNALS", "true")
    assert Settings().mode == "server"
    assert "NATRELAY_IN_PROCESS_SIGNALS" not in settings_env(Settings())
    monkeypatch.setenv("NATRELAY_MODE", "lambda")
    with pytest.raises(ValidationError, match="NATRELAY_IN_PROCESS_SIGNALS=true contradicts"):
        Settings()


def test_dev_configures_the_app_without_touching_the_environment() -> None:
    args = dev_args.parser().parse_args(["--table-prefix", "cfg-", "--heartbeat-timeout", "4"])
    before = dict(os.environ)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        relay = dev._configure(args, sock, "https://dynamodb.example", embedded=False)
    assert dict(os.environ) == before
    assert relay.settings.dynamodb_endpoint == "https://dynamodb.example"
    assert (relay.settings.llms_table, relay.settings.tasks_table) == (TABLES.llms, TABLES.tasks)
    assert relay.settings.heartbeat_timeout_seconds == 4
    assert relay.settings.client_token.get_secret_value() == relay.client_token
