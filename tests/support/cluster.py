"""A relay as a self-hoster runs it, for the fault suite and the soak: real processes.

* DynamoDB: moto in its own process (`MotoProcess`), so a test can freeze it (SIGSTOP)
  and thaw it (SIGCONT) without losing its state, as a DynamoDB outage would.
* The relay: `natrelay dev --dynamodb-endpoint …` (uvicorn, long-lived mode, with its
  sweeper) on fixed tables and a fixed port, so it can be killed (SIGKILL) and started
  again in front of the same state.
* Publishers: `natrelay publish` processes (tests/publisher/running.py).

`unsettled()` reads the tasks table itself: what is still pending or claimed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from natrelay.wire import KeyCreated, KeySpec, Paths, Role
from natrelay_infra.children import die_with_parent, stop_child
from natrelay_infra.tables import TableNames
from tests.support.net import free_port, wait_http
from tests.support.stack import ADMIN_TOKEN, CLIENT_TOKEN, FAKE_AWS, PUBLISH_TOKEN, dynamodb_client

# Short timeouts, so that each fault plays out in seconds.
FAST = {
    "NATRELAY_LEASE_SECONDS": "5",
    "NATRELAY_REQUEST_TIMEOUT_SECONDS": "10",
    "NATRELAY_POLL_MAX_INTERVAL_SECONDS": "0.5",
}
HEARTBEAT_TIMEOUT_SECONDS = 3
SWEEP_SECONDS = 1


@dataclass
class Relay:
    """`natrelay dev` on an outside DynamoDB; `kill()` and `start()` again keep its state."""

    dynamodb: str
    logdir: Path
    tables: TableNames = field(
        default_factory=lambda: TableNames.with_prefix(f"f{uuid.uuid4().hex[:8]}-")
    )
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=lambda: dict(FAST))
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_SECONDS
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self.starts += 1
        args = [
            sys.executable,
            "-m",
            "natrelay_publisher",
            "dev",
            "--port",
            str(self.port),
            "--dynamodb-endpoint",
            self.dynamodb,
            "--table-prefix",
            self.tables.llms.removesuffix("Llms"),
            "--client-token",
            CLIENT_TOKEN,
            "--publisher-token",
            PUBLISH_TOKEN,
            "--admin-token",
            ADMIN_TOKEN,
            "--heartbeat-timeout",
            str(self.heartbeat_timeout),
            "--sweep-interval",
            str(SWEEP_SECONDS),
            "--log-level",
            "warning",
        ]
        if self.starts > 1:
            args.append("--no-create-tables")
        with (self.logdir / f"relay-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                args,
                env={**os.environ, **FAKE_AWS, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - an async-signal-safe prctl
            )
        process = self.process
        wait_http(f"{self.url}{Paths.HEALTH}", 60, lambda: process.poll() is None)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no draining, requests in flight cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_child(self.process, timeout=15)

    def rss_kb(self) -> int:
        """The relay process's resident memory (Linux), 0 if unknown."""
        if self.process is None:
            return 0
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "")
        return int(line.split()[1]) if line else 0

    def log(self) -> str:
        return "\n".join(
            (self.logdir / f"relay-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

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
        """Tasks still pending or claimed, as the table holds them."""
        return unsettled(self.dynamodb, self.tables)


def unsettled(dynamodb: str, tables: TableNames) -> list[dict[str, Any]]:
    client = dynamodb_client(dynamodb)
    found = []
    for page in client.get_paginator("scan").paginate(
        TableName=tables.tasks,
        FilterExpression="sk = :m AND (#s = :pending OR #s = :claimed)",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={
            ":m": {"S": "m"},
            ":pending": {"S": "pending"},
            ":claimed": {"S": "claimed"},
        },
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
