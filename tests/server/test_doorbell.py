"""The doorbell's relay side: `$connect` / `$disconnect` through the Lambda handler
(functions/doorbell/app.py, real event shapes), bindings in DynamoDB, and rings through
the API Gateway Management API (moto's `apigatewaymanagementapi`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import pytest
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

from natrelay.service import Principal, Relay
from natrelay.service.assembly import build_relay
from natrelay.settings import Settings
from natrelay.store import GatewayConnections, Stores
from natrelay.wire import (
    DOORBELL_SESSION_HEADER,
    KeySpec,
    PollRequest,
    RegisterRequest,
    Role,
    TaskState,
)
from tests.server.conftest import CHAT, CLIENT, PUB, spec
from tests.server.test_handlers import load_handler

EVENTS = Path(__file__).resolve().parents[1] / "events"
ENDPOINT = "https://abc123def4.execute-api.us-east-1.amazonaws.com/relay"
PUBLISH = "p" * 20
STATIC_PUB = Principal(key_id="static-publisher", role=Role.PUBLISHER)
T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


def sent(connection_id: str) -> list[dict[str, Any]]:
    """What the relay posted to a connection, as moto's management API recorded it."""
    backend = apigatewaymanagementapi_backends["123456789012"]["us-east-1"]
    # moto keeps the id as it appears in the URL path (API Gateway decodes it)
    data = backend.connections[quote(connection_id, safe="")].data.decode()
    return [json.loads(part) for part in data.replace("}{", "}\n{").splitlines() if part]


def connect_event(connection_id: str, token: str | None, session: str | None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "websocket-connect.json").read_text())
    event["requestContext"]["connectionId"] = connection_id
    headers = event["headers"]
    headers.pop("Authorization", None)
    headers.pop(DOORBELL_SESSION_HEADER, None)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers[DOORBELL_SESSION_HEADER] = session
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


def disconnect_event(connection_id: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "websocket-disconnect.json").read_text())
    event["requestContext"]["connectionId"] = connection_id
    return event


@pytest.fixture
def settings() -> Settings:
    return Settings(
        llms_table="Llms",
        tasks_table="Tasks",
        keys_table="Keys",
        publish_token=PUBLISH,  # type: ignore[arg-type]
        client_token="c" * 20,  # type: ignore[arg-type]
        doorbell_endpoint=ENDPOINT,
    )


@pytest.fixture
def relay(client: Any, settings: Settings) -> Relay:
    """A relay that rings through the management API (moto), as ApiFunction does."""
    connections = GatewayConnections(ENDPOINT, "us-east-1")
    return build_relay(settings, Stores.on(client, "Llms", "Tasks", "Keys", connections))


@pytest.fixture
def doorbell(
    client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """functions/doorbell/app.py, imported the way Lambda does, on the same tables."""
    env = {
        "NATRELAY_LLMS_TABLE": "Llms",
        "NATRELAY_TASKS_TABLE": "Tasks",
        "NATRELAY_KEYS_TABLE": "Keys",
        "NATRELAY_PUBLISH_TOKEN": PUBLISH,
        "NATRELAY_CLIENT_TOKEN": "c" * 20,
        "NATRELAY_LOG_FORMAT": "text",
    }
    yield load_handler("doorbell", monkeypatch, env)


def register(relay: Relay, *names: str, principal: Principal = STATIC_PUB) -> str:
    async def go() -> str:
        request = RegisterRequest(providers=[spec(n) for n in names])
        return (await relay.sessions.register(principal, request)).session.id

    return run(go)


def doorbell_of(relay: Relay, name: str) -> str | None:
    """The connection that rings for the (one) member of the pool of `name`."""

    async def go() -> str | None:
        row = await relay.stores.llms.get(name)
        assert row is not None and len(row.members) == 1
        return next(iter(row.members.values())).doorbell

    return run(go)


def test_a_ring_reaches_the_connection_of_the_tasks_session_only(
    relay: Relay, doorbell: ModuleType
) -> None:
    s1, s2 = register(relay, "a"), register(relay, "b")
    assert doorbell.handler(connect_event("conn-one=", PUBLISH, s1), None) == {"statusCode": 200}
    assert doorbell.handler(connect_event("conn-two=", PUBLISH, s2), None) == {"statusCode": 200}
    assert doorbell_of(relay, "a") == "conn-one="
    assert doorbell_of(relay, "b") == "conn-two="

    task = run(lambda: relay.queue.submit(CLIENT, "a", CHAT, stream=False))
    assert sent("conn-one=") == [{"type": "ring", "taskId": task.id}]
    assert sent("conn-two=") == []

    other = run(lambda: relay.queue.submit(CLIENT, "b", CHAT, stream=False))
    assert sent("conn-one=") == [{"type": "ring", "taskId": task.id}]
    assert sent("conn-two=") == [{"type": "ring", "taskId": other.id}]


def test_connect_is_refused_to_a_client_key_a_bad_key_and_another_keys_session(
    relay: Relay, doorbell: ModuleType
) -> None:
    mine = register(relay, "a")
    theirs = register(relay, "b", principal=PUB)  # a session of another publisher key

    async def stored_key(role: Role) -> str:
        return (await relay.keys.create(KeySpec(role=role, label=role.value)))[1]

    client_key = run(lambda: stored_key(Role.CLIENT))
    publisher_key = run(lambda: stored_key(Role.PUBLISHER))
    refused = {
        "a client token": (connect_event("c1=", "c" * 20, mine), 403),
        "a client key": (connect_event("c2=", client_key, mine), 403),
        "a bad key": (connect_event("c3=", "nrk_0123456789ab_" + "x" * 43, mine), 401),
        "no key": (connect_event("c4=", None, mine), 401),
        "another key's session": (connect_event("c5=", PUBLISH, theirs), 403),
        "a session of none": (connect_event("c6=", PUBLISH, "no-such-session-123"), 403),
        "no session": (connect_event("c7=", PUBLISH, None), 403),
        "a publisher key, not the session's": (connect_event("c8=", publisher_key, mine), 403),
    }
    for why, (event, status) in refused.items():
        answer = doorbell.handler(event, None)
        assert answer["statusCode"] == status, why
        assert "no-such-session" not in answer.get("body", ""), why  # no session id echoed
    assert doorbell_of(relay, "a") is None
    assert doorbell_of(relay, "b") is None
    code = json.loads(doorbell.handler(refused["another key's session"][0], None)["body"])
    assert code["error"]["code"] == "session_forbidden"


def test_disconnect_unbinds_but_leaves_a_newer_connection_bound(
    relay: Relay, doorbell: ModuleType
) -> None:
    session = register(relay, "a", "b")
    doorbell.handler(connect_event("old=", PUBLISH, session), None)
    doorbell.handler(connect_event("new=", PUBLISH, session), None)  # opened before old closed
    assert doorbell.handler(disconnect_event("old="), None) == {"statusCode": 200}
    assert doorbell_of(relay, "a") == doorbell_of(relay, "b") == "new="
    doorbell.handler(disconnect_event("new="), None)
    assert doorbell_of(relay, "a") is None and doorbell_of(relay, "b") is None

    run(lambda: relay.queue.submit(CLIENT, "a", CHAT, stream=False))
    assert sent("old=") == [] and sent("new=") == []  # nothing rung once unbound


def test_registering_again_drops_the_binding(relay: Relay, doorbell: ModuleType) -> None:
    session = register(relay, "a")
    doorbell.handler(connect_event("conn=", PUBLISH, session), None)
    register_again = RegisterRequest(providers=[spec("a")], provider_session_id=session)
    run(lambda: relay.sessions.register(STATIC_PUB, register_again))
    assert doorbell_of(relay, "a") is None  # the publisher binds its next connection anew


@pytest.mark.anyio
async def test_a_poll_claims_by_ring_only_its_own_sessions_tasks(relay: Relay) -> None:
    mine = (await relay.sessions.register(PUB, RegisterRequest(providers=[spec("a")]))).session
    other = (await relay.sessions.register(PUB, RegisterRequest(providers=[spec("b")]))).session
    task = await relay.queue.submit(CLIENT, "a", CHAT, stream=False)

    def poll(session: str, ids: list[str]) -> PollRequest:
        return PollRequest(provider_session_id=session, wait_seconds=0, max_tasks=4, task_ids=ids)

    assert await relay.claims.poll(PUB, poll(other.id, [task.id])) == []
    assert (await relay.waiting.get(task.id)).state is TaskState.PENDING
    claimed = await relay.claims.poll(PUB, poll(mine.id, [task.id]))
    assert [t.id for t in claimed] == [task.id]
