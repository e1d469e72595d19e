"""Lambda SnapStart: the api handler's INIT registers a restore hook only when Lambda
snapshots it, and each restore gives the instance new AWS clients and its own random
sequence, and the handler goes on serving from DynamoDB."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
import snapshot_restore_py

from natrelay_infra.moto_server import MotoProcess
from tests.server.test_handlers import body_of, http_event, load_handler, register_event
from tests.support.stack import CLIENT_TOKEN, fresh_tables, relay_env

Hook = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


@pytest.fixture
def env(moto_server: MotoProcess) -> dict[str, str]:
    return relay_env(moto_server.endpoint, fresh_tables(moto_server.endpoint), mode="lambda")


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> list[Hook]:
    """What the handler registers with the runtime's `register_after_restore`."""
    registered: list[Hook] = []

    def register(func: Callable[..., object], *args: Any, **kwargs: Any) -> Callable[..., object]:
        registered.append((func, args, kwargs))
        return func

    monkeypatch.setattr(snapshot_restore_py, "register_after_restore", register)
    return registered


def restore(hooks: list[Hook]) -> None:
    """What the runtime does after a restore: every hook, in the order registered."""
    for func, args, kwargs in hooks:
        func(*args, **kwargs)


def test_an_ordinary_init_registers_nothing(
    env: dict[str, str], hooks: list[Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    load_handler("api", monkeypatch, env)
    assert hooks == []


def test_each_restore_renews_clients_and_random(
    env: dict[str, str], hooks: list[Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    api = load_handler("api", monkeypatch, env)
    assert len(hooks) == 1
    built = api.app.state.relay
    assert api.handler(register_event(), None)["statusCode"] == 200

    snapshot = random.getstate()  # what every instance restored from one snapshot starts with
    draws = []
    clients = {id(built.stores.client)}
    for _ in range(2):
        random.setstate(snapshot)
        restore(hooks)
        relay = api.app.state.relay
        assert relay is not built and relay.settings is built.settings
        clients.add(id(relay.stores.client))
        draws.append(random.random())
    assert len(clients) == 3  # a client of its own after each restore
    assert draws[0] != draws[1]  # two restores of one snapshot do not share a sequence

    # the renewed relay reads and writes the same tables
    row = api.handler(http_event("GET", "/api/v1/llms/a", CLIENT_TOKEN), None)
    assert row["statusCode"] == 200
    assert json.loads(body_of(row))["name"] == "a"
