"""A real relay for tests: a serialized moto server and the API under uvicorn (a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
import httpx

from natrelay_infra.tables import TableNames, create_tables

PUBLISH_TOKEN = "test-publish-token-0123456789"
CLIENT_TOKEN = "test-client-token-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.05)


def dynamodb_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def fresh_tables(endpoint: str) -> TableNames:
    names = TableNames.with_prefix(f"t{uuid.uuid4().hex[:10]}-")
    create_tables(dynamodb_client(endpoint), names)
    return names


def relay_env(endpoint: str, tables: TableNames, **settings: object) -> dict[str, str]:
    """The environment that points the relay (API, sweeper) at these tables."""
    env = {
        **FAKE_AWS,
        "NATRELAY_DYNAMODB_ENDPOINT": endpoint,
        "NATRELAY_LLMS_TABLE": tables.llms,
        "NATRELAY_TASKS_TABLE": tables.tasks,
        "NATRELAY_KEYS_TABLE": tables.keys,
        "NATRELAY_PUBLISH_TOKEN": PUBLISH_TOKEN,
        "NATRELAY_CLIENT_TOKEN": CLIENT_TOKEN,
        "NATRELAY_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    env.update(
        {
            f"NATRELAY_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in settings.items()
        }
    )
    return env


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_api(env: Mapping[str, str], port: int | None = None) -> ApiProcess:
    """Start the relay API under uvicorn on 127.0.0.1 and wait until it answers."""
    port = port or free_port()
    full_env = {**os.environ, **env}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "natrelay.web:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=full_env,
    )
    api = ApiProcess(url=f"http://127.0.0.1:{port}", process=process, env=dict(env))
    try:
        wait_http(f"{api.url}/healthz")
    except TimeoutError:
        api.stop()
        raise
    return api


@dataclass
class Stack:
    """A running relay: `url` is the API's base URL (the OpenAI base URL is url + /v1)."""

    url: str
    moto_endpoint: str
    tables: TableNames
    api: ApiProcess
    publish_token: str = PUBLISH_TOKEN
    client_token: str = CLIENT_TOKEN
    admin_token: str = ADMIN_TOKEN

    @property
    def env(self) -> dict[str, str]:
        return self.api.env


@contextmanager
def running_stack(moto_endpoint: str, **settings: object) -> Iterator[Stack]:
    """Fresh tables on the given moto server and an API process in front of them."""
    tables = fresh_tables(moto_endpoint)
    api = start_api(relay_env(moto_endpoint, tables, **settings))
    try:
        yield Stack(url=api.url, moto_endpoint=moto_endpoint, tables=tables, api=api)
    finally:
        api.stop()
