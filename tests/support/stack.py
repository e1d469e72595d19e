"""A real relay for tests: a serialized moto server and the API under uvicorn (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from natrelay_infra.children import stop_child
from natrelay_infra.relay_config import relay_settings, settings_env
from natrelay_infra.tables import TableNames, create_tables
from tests.support.net import free_port, wait_http

PUBLISH_TOKEN = "test-publish-token-0123456789"
CLIENT_TOKEN = "test-client-token-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_child(self.process, timeout=10)


def start_api(
    env: Mapping[str, str], port: int | None = None, log_file: Path | None = None
) -> ApiProcess:
    """Start the relay API under uvicorn on 127.0.0.1 and wait until it answers; its log
    (stderr) goes to `log_file` when given."""
    port = port or free_port()
    full_env = {**os.environ, **env}
    stderr = log_file.open("ab") if log_file is not None else None
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
        stderr=stderr,
    )
    if stderr is not None:
        stderr.close()  # the child has its own copy
    api = ApiProcess(url=f"http://127.0.0.1:{port}", process=process, env=dict(env))
    try:
        wait_http(f"{api.url}/healthz", alive=lambda: process.poll() is None)
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
def running_stack(
    moto_endpoint: str, log_file: Path | None = None, **settings: object
) -> Iterator[Stack]:
    """Fresh tables on the given moto server and an API process in front of them."""
    tables = fresh_tables(moto_endpoint)
    api = start_api(relay_env(moto_endpoint, tables, **settings), log_file=log_file)
    try:
        yield Stack(url=api.url, moto_endpoint=moto_endpoint, tables=tables, api=api)
    finally:
        api.stop()


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
