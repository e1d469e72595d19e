"""The tests' real process stack: the relay as it runs for real, on a moto server.

* `running_stack(moto_endpoint, **settings)`: fresh tables and the API under uvicorn
  (`natrelay.web:create_app`, configured by NATRELAY_* settings as on Lambda or
  self-hosted). `apis=N` runs N instances on the same tables; `gateway=True` is the AWS
  path of the doorbell: in-process signals off, and the instances ring publishers
  through the API Gateway WebSocket stand-in (natrelay_infra.gateway).
* `DevRelay`: `natrelay dev --dynamodb-endpoint …` (long-lived, sweeping itself) on
  fixed tables and port, killed and started again in front of the same state.

Service-level tests use the in-process relay of tests/server/conftest.py instead; the
benchmark builds its stacks from the same parts (tests/perf/procs.py).
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from natrelay.wire import KeyCreated, KeySpec, Paths, Role
from natrelay_infra.relay_config import relay_settings, settings_env
from natrelay_infra.tables import TableNames, create_tables
from tests.support.net import free_port, wait_http, wait_until
from tests.support.processes import Child

PUBLISH_TOKEN = "test-publish-token-0123456789"
CLIENT_TOKEN = "test-client-token-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STAGE = "relay"  # the gateway stand-in's stage: wss://<api>.execute-api.<region>…/<stage>


def dynamodb_client(endpoint: str) -> Any:
    # A session of its own: boto3's default session must not create clients in two threads.
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )


def fresh_tables(endpoint: str) -> TableNames:
    names = TableNames.with_prefix(f"t{uuid.uuid4().hex[:10]}-")
    create_tables(dynamodb_client(endpoint), names)
    return names


def relay_env(endpoint: str, tables: TableNames, **settings: Any) -> dict[str, str]:
    """The environment that points a relay process (API, sweeper) at these tables."""
    configured = relay_settings(
        endpoint,
        tables,
        client_token=CLIENT_TOKEN,
        publish_token=PUBLISH_TOKEN,
        admin_token=ADMIN_TOKEN,
        **settings,
    )
    return {**FAKE_AWS, **settings_env(configured)}


def wake_tasks_written(endpoint: str, tasks_table: str) -> int:
    """How many wake tasks the relay wrote to the table."""
    items = dynamodb_client(endpoint).scan(
        TableName=tasks_table,
        FilterExpression="kind = :w",
        ExpressionAttributeValues={":w": {"S": "wake"}},
    )["Items"]
    return len(items)


def unsettled(endpoint: str, tables: TableNames) -> list[dict[str, Any]]:
    """Tasks still pending or claimed, as the table holds them."""
    found = []
    for page in (
        dynamodb_client(endpoint)
        .get_paginator("scan")
        .paginate(
            TableName=tables.tasks,
            FilterExpression="sk = :m AND (#s = :pending OR #s = :claimed)",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":m": {"S": "m"},
                ":pending": {"S": "pending"},
                ":claimed": {"S": "claimed"},
            },
        )
    ):
        found += [
            {
                "id": i["pk"]["S"].removeprefix("task#"),
                "state": i["state"]["S"],
                "llm": i.get("llm", {}).get("S"),
                "kind": i.get("kind", {}).get("S"),
                "attempts": i.get("attempts", {}).get("N"),
            }
            for i in page["Items"]
        ]
    return found


def put_secret(endpoint: str, name: str, value: str) -> str:
    """Store `value` as the Secrets Manager secret `name` on the moto server; its name."""
    boto3.session.Session().client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_secret(Name=name, SecretString=value)
    return name


class Server(Child):
    """A child serving HTTP on 127.0.0.1, started and waited for until `health` answers.

    `command(port)` is its command line. With port 0 it picks a free port itself and says
    which (its first line on stdout, or the `announce` pattern in its log): parallel test
    workers never race for a port. `kill()` or `stop()`, then `start()` again, keeps the
    port.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        health: str,
        *,
        port: int = 0,
        env: Mapping[str, str],
        log: Path | None = None,
        announce: str | None = None,
        start_seconds: float = 60.0,
    ) -> None:
        self.command, self.health, self.port, self.announce = command, health, port, announce
        self.start_seconds = start_seconds
        pipe = port == 0 and announce is None
        super().__init__(name, command(port), env=env, log=log, pipe=pipe)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.args, self.pipe = self.command(self.port), False
        self.restart()
        self._wait_ready()

    def _wait_ready(self) -> None:
        try:
            if self.port == 0:
                self.port = int(self._announced().rsplit(":", 1)[1])
            wait_http(f"{self.url}{self.health}", self.start_seconds, alive=lambda: self.alive)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def _announced(self) -> str:
        if self.announce is None:
            return self.first_line()
        pattern = re.compile(self.announce)

        def said() -> re.Match[str] | None:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            return pattern.search(self.output())

        return wait_until(said, 60, f"{self.name} never said {self.announce!r}")[1]


def start_api(env: Mapping[str, str], port: int = 0, log_file: Path | None = None) -> Server:
    """The relay API (`natrelay.web:create_app`) under uvicorn on 127.0.0.1, answering;
    its log (stderr) goes to `log_file` when given, else to the test's own stderr."""

    def command(port: int) -> list[str]:
        app = ["natrelay.web:create_app", "--factory", "--port", str(port)]
        return [sys.executable, "-m", "tests.support.asgi", *app]

    return Server("api", command, Paths.HEALTH, port=port, env=env, log=log_file)


class Gateway(Server):
    """The API Gateway WebSocket stand-in (natrelay_infra.gateway)."""

    @property
    def ws_url(self) -> str:
        """What publishers connect to (on AWS: wss://<api>.execute-api.<region>.../<stage>)."""
        return self.url.replace("http://", "ws://") + f"/{STAGE}"

    @property
    def endpoint(self) -> str:
        """The management API endpoint the relay rings through."""
        return f"{self.url}/{STAGE}"

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/_gateway/stats", timeout=5).json())

    def forget(self) -> None:
        httpx.post(f"{self.url}/_gateway/forget", timeout=5).raise_for_status()


def start_gateway(
    env: Mapping[str, str],
    port: int = 0,
    *,
    max_connection_seconds: float = 7200,
    log_file: Path | None = None,
) -> Gateway:
    def command(port: int) -> list[str]:
        args = [sys.executable, "-m", "natrelay_infra.gateway", "--port", str(port)]
        return [*args, "--max-connection-seconds", str(max_connection_seconds)]

    return Gateway("gateway", command, "/_gateway/stats", port=port, env=env, log=log_file)


@dataclass
class Stack:
    """A running relay: `url` is the API's base URL (the OpenAI base URL is url + /v1)."""

    moto_endpoint: str
    tables: TableNames
    # The relay's settings as its API processes have them (start_api(stack.env) adds one).
    env: dict[str, str]
    apis: list[Server] = field(default_factory=list)
    gateway: Gateway | None = None
    # Without `gateway`, unused: the port it listens on, and the settings it runs with.
    gateway_port: int = 0
    gateway_env: dict[str, str] = field(default_factory=dict)
    publish_token: str = PUBLISH_TOKEN
    client_token: str = CLIENT_TOKEN
    admin_token: str = ADMIN_TOKEN

    @property
    def api(self) -> Server:
        return self.apis[0]

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def publisher_url(self) -> str:
        """Where publishers go (with several instances: the first, as one Lambda)."""
        return self.apis[0].url

    @property
    def client_url(self) -> str:
        """Where clients go (with several instances: the last, as another Lambda)."""
        return self.apis[-1].url

    @property
    def doorbell_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/{STAGE}"


@contextmanager
def running_stack(
    moto_endpoint: str,
    log_file: Path | None = None,
    *,
    apis: int = 1,
    gateway: bool = False,
    gateway_up: bool = True,
    max_connection_seconds: float = 7200,
    **settings: Any,
) -> Iterator[Stack]:
    """Fresh tables on the given moto server and `apis` API processes in front of them;
    with `gateway`, the doorbell's AWS path (the stand-in left to the test when not
    `gateway_up`: its port and settings are set)."""
    tables = fresh_tables(moto_endpoint)
    if gateway:
        settings["in_process_signals"] = False
    base = relay_env(moto_endpoint, tables, **settings)
    stack = Stack(moto_endpoint, tables, base, gateway_env=base)
    try:
        if gateway and gateway_up:
            stack.gateway = start_gateway(
                base, max_connection_seconds=max_connection_seconds, log_file=log_file
            )
            stack.gateway_port = stack.gateway.port
        elif gateway:
            stack.gateway_port = free_port()  # for the test to start it on, later
        if gateway:
            doorbell = {
                "NATRELAY_DOORBELL_ENDPOINT": f"http://127.0.0.1:{stack.gateway_port}/{STAGE}",
                "NATRELAY_DOORBELL_URL": stack.doorbell_url,
            }
            stack.env = {**base, **doorbell}
        for _ in range(apis):
            stack.apis.append(start_api(stack.env, log_file=log_file))
        yield stack
    finally:
        for api in stack.apis:
            api.stop()
        if stack.gateway is not None:
            stack.gateway.stop()


# `natrelay dev`'s timeouts, short, so that each fault plays out in seconds.
FAST = {
    "NATRELAY_LEASE_SECONDS": "5",
    "NATRELAY_REQUEST_TIMEOUT_SECONDS": "10",
    "NATRELAY_POLL_MAX_INTERVAL_SECONDS": "0.5",
}
HEARTBEAT_TIMEOUT_SECONDS = 3
SWEEP_SECONDS = 1


@dataclass
class DevRelay:
    """`natrelay dev` on an outside DynamoDB (`dynamodb`): `kill()` and `start()` again
    keep its state and port; its log goes to `logdir`/relay.log."""

    dynamodb: str
    logdir: Path
    tables: TableNames = field(
        default_factory=lambda: TableNames.with_prefix(f"f{uuid.uuid4().hex[:8]}-")
    )
    env: dict[str, str] = field(default_factory=lambda: dict(FAST))
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_SECONDS
    # Offer publishers the doorbell (served and rung by the relay process itself).
    doorbell: bool = False
    server: Server | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return self.server.url

    def _command(self, port: int) -> list[str]:
        args = [sys.executable, "-m", "natrelay_publisher", "dev", "--port", str(port)]
        args += ["--dynamodb-endpoint", self.dynamodb]
        args += ["--table-prefix", self.tables.llms.removesuffix("Llms")]
        args += ["--client-token", CLIENT_TOKEN, "--publisher-token", PUBLISH_TOKEN]
        args += ["--admin-token", ADMIN_TOKEN, "--heartbeat-timeout", str(self.heartbeat_timeout)]
        args += ["--sweep-interval", str(SWEEP_SECONDS), "--log-level", "warning"]
        args += ["--doorbell"] if self.doorbell else []
        return args if self.starts == 1 else [*args, "--no-create-tables"]

    def start(self) -> DevRelay:
        self.starts += 1
        if self.server is None:
            self.server = Server(
                "relay",
                self._command,
                Paths.HEALTH,
                env={**FAKE_AWS, **self.env},
                log=self.logdir / "relay.log",
                announce=r"relay API at (http://127\.0\.0\.1:\d+)",
            )
        else:
            self.server.start()
        return self

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=15)

    def rss_kb(self) -> int:
        return self.server.rss_kb() if self.server is not None else 0

    def log(self) -> str:
        return self.server.output() if self.server is not None else ""

    def publisher_key(self, label: str) -> str:
        """A stored publisher key (`nrk_…`), created through the admin API."""
        spec = KeySpec(role=Role.PUBLISHER, label=label)
        answer = httpx.post(
            f"{self.url}{Paths.KEYS}",
            json=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        answer.raise_for_status()
        return KeyCreated.model_validate(answer.json()).secret

    def publisher_config(
        self, providers: list[dict[str, Any]], session_file: Path, token: str = PUBLISH_TOKEN
    ) -> dict[str, Any]:
        return {
            "relay": {
                "url": self.url,
                "token": token,
                "sessionFile": str(session_file),
                "heartbeatSeconds": 1,
                "pollWaitSeconds": 5,
                "shutdownGraceSeconds": 5,
            },
            "providers": providers,
        }

    def unsettled(self) -> list[dict[str, Any]]:
        return unsettled(self.dynamodb, self.tables)
