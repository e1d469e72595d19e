"""The doorbell end to end, with real processes on 127.0.0.1: the AWS path (two API
processes without in-process signals, ringing through the API Gateway stand-in) and the
long-lived one (the API serving the WebSocket itself), with the real publisher."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from natrelay.wire import DOORBELL_SESSION_HEADER, Paths
from natrelay_infra.moto_server import MotoProcess
from tests.publisher.running import PublisherProcess, start_publisher
from tests.support.net import free_port, wait_until
from tests.support.stack import (
    CLIENT_TOKEN,
    PUBLISH_TOKEN,
    Stack,
    dynamodb_client,
    fresh_tables,
    relay_env,
    running_stack,
    start_api,
    start_gateway,
)

ECHO = [{"name": "echo", "type": "echo", "model": "echo", "maxConcurrency": 4}]


def chat(url: str, text: str, timeout: float = 20.0) -> str:
    answer = httpx.post(
        f"{url}{Paths.CHAT}",
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        json={"model": "echo", "messages": [{"role": "user", "content": text}]},
        timeout=timeout,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["message"]["content"])


def row_doorbell(relay: Stack, name: str) -> str | None:
    """The connection bound to the (one) member of the pool of `name`, if any."""
    item = dynamodb_client(relay.moto_endpoint).get_item(
        TableName=relay.tables.llms, Key={"name": {"S": name}}, ConsistentRead=True
    )["Item"]
    bells = [
        v["M"]["doorbell"]["S"]
        for k, v in item.items()
        if k.startswith("m#") and "doorbell" in v.get("M", {})
    ]
    return bells[0] if bells else None


def lambda_relay(
    moto_endpoint: str, tmp_path: Path, **settings: Any
) -> AbstractContextManager[Stack]:
    """The relay as on AWS: two API processes (a publisher's, a client's, as two Lambda
    instances) ringing through the API Gateway stand-in."""
    return running_stack(moto_endpoint, tmp_path / "relay.log", apis=2, gateway=True, **settings)


@contextmanager
def publisher(url: str, tmp_path: Path, **doorbell: Any) -> Iterator[PublisherProcess]:
    config = {
        "relay": {
            "url": url,
            "token": PUBLISH_TOKEN,
            "sessionFile": str(tmp_path / "session.json"),
            "heartbeatSeconds": 1,
            "pollWaitSeconds": 5,
            "shutdownGraceSeconds": 5,
            "doorbell": doorbell,
        },
        "providers": ECHO,
    }
    process = start_publisher(config, tmp_path)
    try:
        yield process
    finally:
        process.stop()


def served(url: str, publisher: PublisherProcess) -> None:
    """Wait until the model answers (published and polled)."""

    def ok() -> bool:
        try:
            return chat(url, "ready?", timeout=5) == "ready?"
        except (AssertionError, httpx.HTTPError):
            return False

    wait_until(ok, 30, lambda: f"never served:\n{publisher.log()}")


def test_rings_through_the_gateway_dispatch_requests_between_two_api_processes(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    with lambda_relay(moto_server.endpoint, tmp_path, heartbeat_timeout_seconds=60) as relay:
        assert relay.gateway is not None
        with publisher(relay.publisher_url, tmp_path, safetyPollSeconds=600) as pub:
            pub.wait_log("doorbell connected")
            served(relay.client_url, pub)
            before = relay.gateway.stats().get("delivered", 0)
            for i in range(5):
                assert chat(relay.client_url, f"rung {i}") == f"rung {i}"
            # each request rang the publisher; its safety poll (40 s here) never had to
            assert relay.gateway.stats()["delivered"] - before == 5
            assert row_doorbell(relay, "echo") is not None
            assert "long-poll" not in pub.log()
        # the publisher closed its connection: $disconnect unbound it
        wait_until(lambda: row_doorbell(relay, "echo") is None, 10, "still bound")


def test_a_gone_connection_is_unbound_and_the_safety_poll_claims_the_task(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    with lambda_relay(moto_server.endpoint, tmp_path, heartbeat_timeout_seconds=6) as relay:
        assert relay.gateway is not None
        # safety poll every min(600, 2/3 of the 6 s heartbeat timeout) = 4 s
        with publisher(relay.publisher_url, tmp_path, safetyPollSeconds=600) as pub:
            pub.wait_log("doorbell connected")
            served(relay.client_url, pub)
            relay.gateway.forget()  # API Gateway lost the connection; nobody was told
            assert chat(relay.client_url, "still there?") == "still there?"
            stats = relay.gateway.stats()
            assert stats["gone"] == 1
            assert row_doorbell(relay, "echo") is None  # unbound by the ring that met 410


def test_a_refused_websocket_falls_back_to_long_poll_and_back(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    # the doorbell's port refuses connections at first: the publisher long-polls
    with (
        lambda_relay(moto_server.endpoint, tmp_path, gateway_up=False) as relay,
        publisher(relay.publisher_url, tmp_path, retrySeconds=1) as pub,
    ):
        pub.wait_log("doorbell unavailable")
        served(relay.client_url, pub)
        for i in range(3):
            assert chat(relay.client_url, f"polled {i}") == f"polled {i}"
        assert pub.log().count("doorbell unavailable") == 1  # said once, retried quietly
        # the gateway comes up: back to the doorbell, and rung from then on
        relay.gateway = start_gateway(relay.gateway_env, relay.gateway_port)
        pub.wait_log("doorbell up again")
        before = relay.gateway.stats().get("delivered", 0)
        assert chat(relay.client_url, "rung") == "rung"
        assert relay.gateway.stats()["delivered"] == before + 1


def test_reconnecting_across_the_connection_age_limit_loses_no_ring(
    moto_server: MotoProcess, tmp_path: Path
) -> None:
    with lambda_relay(
        moto_server.endpoint, tmp_path, max_connection_seconds=3, heartbeat_timeout_seconds=90
    ) as relay:
        assert relay.gateway is not None
        # The publisher moves to a new connection every 1.5 s, before the gateway's 3 s
        # limit. A ring lost in a gap would leave its request to the safety poll (60 s):
        # past the 20 s each request may take here.
        with publisher(
            relay.publisher_url, tmp_path, maxConnectionSeconds=1.5, safetyPollSeconds=600
        ) as pub:
            pub.wait_log("doorbell connected")
            served(relay.client_url, pub)
            first = relay.gateway.stats()["connects"]
            deadline = time.monotonic() + 30
            i = 0
            while relay.gateway.stats()["connects"] < first + 4 and time.monotonic() < deadline:
                assert chat(relay.client_url, f"across {i}") == f"across {i}"
                i += 1
                time.sleep(0.05)
            stats = relay.gateway.stats()
            assert stats["connects"] >= first + 4, stats
            assert stats.get("closedByGateway", 0) == 0  # replaced before the limit, every time
            assert stats.get("gone", 0) == 0


@pytest.fixture
def long_lived(moto_server: MotoProcess, tmp_path: Path) -> Iterator[str]:
    """The API under uvicorn serving the doorbell itself, as natrelay dev runs it."""
    port = free_port()
    env = relay_env(
        moto_server.endpoint,
        fresh_tables(moto_server.endpoint),
        doorbell_url=f"ws://127.0.0.1:{port}{Paths.DOORBELL}",
    )
    api = start_api(env, port, log_file=tmp_path / "api.log")
    try:
        yield api.url
    finally:
        api.stop()


async def handshake(url: str, token: str | None, session: str | None) -> int:
    """The HTTP status the doorbell answers a WebSocket handshake with."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers[DOORBELL_SESSION_HEADER] = session
    try:
        async with connect(url, additional_headers=headers, open_timeout=5) as socket:
            await socket.send(json.dumps({"action": "ping"}))
            assert json.loads(await socket.recv()) == {"type": "pong"}
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_the_long_lived_relay_serves_the_doorbell_itself_to_its_own_publishers_only(
    long_lived: str, tmp_path: Path
) -> None:
    with publisher(long_lived, tmp_path, safetyPollSeconds=600) as pub:
        pub.wait_log("doorbell connected")
        served(long_lived, pub)
        assert chat(long_lived, "rung in-process") == "rung in-process"
        session_id = json.loads((tmp_path / "session.json").read_text())["providerSessionId"]
        ws = long_lived.replace("http://", "ws://") + Paths.DOORBELL
        statuses = {
            "its own session": asyncio.run(handshake(ws, PUBLISH_TOKEN, session_id)),
            "a client token": asyncio.run(handshake(ws, CLIENT_TOKEN, session_id)),
            "a bad key": asyncio.run(handshake(ws, "nrk_0123456789ab_" + "y" * 43, session_id)),
            "no key": asyncio.run(handshake(ws, None, session_id)),
            "a made-up session": asyncio.run(handshake(ws, PUBLISH_TOKEN, "made-up-session-1")),
        }
        assert statuses == {
            "its own session": 101,
            "a client token": 403,
            "a bad key": 401,
            "no key": 401,
            "a made-up session": 403,
        }


def test_the_claim_route_is_for_a_publisher_on_its_own_session(long_lived: str) -> None:
    url = f"{long_lived}{Paths.CLAIM}"

    def claim(token: str, session: str) -> httpx.Response:
        body = {"providerSessionId": session, "waitSeconds": 25, "maxTasks": 1}
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"})

    registered = httpx.post(
        f"{long_lived}{Paths.REGISTER}",
        json={"providers": [{"name": "mine", "type": "echo", "model": "echo"}]},
        headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"},
    ).json()
    assert registered["doorbellUrl"].endswith(Paths.DOORBELL)
    session = registered["providerSessionId"]
    assert claim(CLIENT_TOKEN, session).json()["error"]["code"] == "forbidden"
    refused = claim(PUBLISH_TOKEN, "made-up-session-1")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "session_forbidden"
    assert claim("nrk_0123456789ab_" + "z" * 43, session).status_code == 401
    answered = claim(PUBLISH_TOKEN, session)  # waitSeconds is ignored: it answers at once
    assert answered.status_code == 200 and answered.json() == {"tasks": []}
