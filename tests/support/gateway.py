"""The AWS path of the doorbell on 127.0.0.1: the stand-in for API Gateway's WebSocket API
(natrelay_infra.gateway) in front of a relay whose API processes ring through it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from natrelay_infra.children import stop_child
from natrelay_infra.tables import TableNames
from tests.support.net import free_port, wait_http
from tests.support.stack import ApiProcess, fresh_tables, relay_env, start_api

STAGE = "relay"


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]

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

    def stop(self) -> None:
        stop_child(self.process, timeout=10)


def start_gateway(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    max_connection_seconds: float = 7200,
    log_file: Path | None = None,
) -> GatewayProcess:
    port = port or free_port()
    stderr = log_file.open("ab") if log_file is not None else None
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "natrelay_infra.gateway",
            "--port",
            str(port),
            "--max-connection-seconds",
            str(max_connection_seconds),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    if stderr is not None:
        stderr.close()
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process)
    try:
        wait_http(f"{gateway.url}/_gateway/stats", alive=lambda: process.poll() is None)
    except TimeoutError:
        gateway.stop()
        raise
    return gateway


@dataclass
class LambdaRelay:
    """Two API processes with no in-process signals (a publisher's and a client's, as two
    Lambda instances), ringing through the gateway stand-in, on fresh tables."""

    moto_endpoint: str
    tables: TableNames
    gateway_port: int
    # What the gateway runs with (the relay's settings, for its $connect / $disconnect).
    gateway_env: dict[str, str]
    gateway: GatewayProcess | None = None
    apis: list[ApiProcess] = field(default_factory=list)

    @property
    def publisher_url(self) -> str:
        return self.apis[0].url

    @property
    def client_url(self) -> str:
        return self.apis[-1].url

    @property
    def doorbell_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/{STAGE}"


@contextmanager
def lambda_relay(
    moto_endpoint: str,
    tmp_path: Path,
    *,
    start: bool = True,
    max_connection_seconds: float = 7200,
    **settings: Any,
) -> Iterator[LambdaRelay]:
    """The relay as on AWS; `start=False` leaves the gateway to the test (its port is set)."""
    tables = fresh_tables(moto_endpoint)
    port = free_port()
    base = relay_env(moto_endpoint, tables, in_process_signals=False, **settings)
    relay = LambdaRelay(moto_endpoint, tables, port, base)
    env = {
        **base,
        "NATRELAY_DOORBELL_ENDPOINT": f"http://127.0.0.1:{port}/{STAGE}",
        "NATRELAY_DOORBELL_URL": relay.doorbell_url,
    }
    try:
        if start:
            relay.gateway = start_gateway(
                base,
                port,
                max_connection_seconds=max_connection_seconds,
                log_file=tmp_path / "gateway.log",
            )
        for _ in range(2):
            relay.apis.append(start_api(env, log_file=tmp_path / "api.log"))
        yield relay
    finally:
        for api in relay.apis:
            api.stop()
        if relay.gateway is not None:
            relay.gateway.stop()
