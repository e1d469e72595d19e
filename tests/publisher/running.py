"""A real publisher process (`python -m natrelay_publisher publish`) for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from natrelay.wire import Paths
from tests.support.net import wait_until
from tests.support.stack import Stack


@dataclass
class PublisherProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        wait_until(
            lambda: self.log().count(text) >= count,
            timeout,
            lambda: f"{text!r} not in the publisher's log:\n{self.log()}",
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"publisher did not stop:\n{self.log()}") from None
        return self.process.returncode


def publisher_config(
    stack: Stack, tmp_path: Path, providers: list[dict[str, Any]], **relay: Any
) -> dict[str, Any]:
    return {
        "relay": {
            "url": stack.url,
            "token": stack.publish_token,
            "sessionFile": str(tmp_path / "state" / "session.json"),
            "heartbeatSeconds": 1,
            "pollWaitSeconds": 5,
            "shutdownGraceSeconds": 15,
            **relay,
        },
        "providers": providers,
    }


def start_publisher(
    config: dict[str, Any],
    tmp_path: Path,
    name: str = "publisher",
    *extra: str,
    config_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> PublisherProcess:
    """Write `config` (to `config_path`, default `<name>.yaml`) and run a publisher on it."""
    config_path = config_path or tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return run_publish(["--config", str(config_path), *extra], tmp_path, name, env, config_path)


def run_publish(
    args: list[str],
    tmp_path: Path,
    name: str = "publisher",
    env: dict[str, str] | None = None,
    config_path: Path | None = None,
) -> PublisherProcess:
    """`natrelay publish ARGS` in a process of its own, logging at INFO to `<name>.log`."""
    log_path = tmp_path / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "natrelay_publisher", "publish", "--log-level", "INFO", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    return PublisherProcess(process, log_path, config_path)


@contextmanager
def publishing(
    stack: Stack, tmp_path: Path, providers: list[dict[str, Any]], statuses: dict[str, str]
) -> Iterator[PublisherProcess]:
    """A publisher process serving `providers` for the block, once the rows have `statuses`."""
    publisher = start_publisher(publisher_config(stack, tmp_path, providers), tmp_path)
    try:
        wait_rows(stack, statuses)
        yield publisher
    finally:
        publisher.stop()


def rows(stack: Stack) -> dict[str, dict[str, Any]]:
    answer = httpx.get(
        f"{stack.url}{Paths.LLMS}",
        headers={"Authorization": f"Bearer {stack.client_token}"},
        timeout=10,
    )
    answer.raise_for_status()
    return {row["name"]: row for row in answer.json()["data"]}


def wait_rows(stack: Stack, expected: dict[str, str], timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the named rows have the expected statuses; returns all rows."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(rows(stack))
        return all(seen.get(n, {}).get("status") == s for n, s in expected.items())

    wait_until(check, timeout, lambda: f"rows never became {expected}: {seen}")
    return seen
