"""The demo publisher of `natrelay dev --demo`: its config file and its process."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import httpx
import yaml

from natrelay_infra.children import die_with_parent, stop_child

DEMO_MODELS = ("echo", "echo-sleepy")

log = logging.getLogger("natrelay.dev")


def demo_config(
    relay_url: str, token: str, workdir: Path, wake_url: str, heartbeat_timeout: float
) -> dict[str, Any]:
    """Publisher config: `echo`, and `echo-sleepy` that sleeps until its wake recipe runs."""
    return {
        "relay": {
            "url": relay_url,
            "token": token,
            "sessionFile": str(workdir / "session.json"),
            "heartbeatSeconds": max(1.0, min(30.0, heartbeat_timeout / 3)),
            # A poll in flight keeps the session alive; a short timeout wants short polls.
            "pollWaitSeconds": min(25.0, heartbeat_timeout),
            # Ctrl-C should not wait long for the demo's tasks in flight.
            "shutdownGraceSeconds": 5,
        },
        "providers": [
            {"name": "echo", "type": "echo", "model": "echo", "options": {"tokenDelayMs": 20}},
            {
                "name": "echo-sleepy",
                "type": "echo",
                "model": "echo",
                "options": {"tokenDelayMs": 20, "availabilityUrl": f"{wake_url}/ready"},
                "wake": {
                    "type": "http",
                    "url": f"{wake_url}/wake",
                    "method": "POST",
                    "maxWaitSeconds": 30,
                },
            },
        ],
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)  # it holds the publish token
    return path


class DemoPublisher:
    """`python -m natrelay_publisher publish --config FILE` as a child process."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.process: subprocess.Popen[bytes] | None = None
        self._reported_exit = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> DemoPublisher:
        # Its own process group, so it gets exactly one signal, from us: a Ctrl-C in the
        # terminal would otherwise reach it too, and a second signal cuts its shutdown short.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "natrelay_publisher",
                "publish",
                "--config",
                str(self.config_path),
            ],
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only an async-signal-safe prctl
        )
        return self

    def check(self) -> None:
        """Say once if the publisher ended while the relay keeps running."""
        if self.process is None or self._reported_exit:
            return
        code = self.process.poll()
        if code is not None:
            self._reported_exit = True
            log.warning(
                "demo publisher (pid %d) exited with code %d; the relay keeps running",
                self.process.pid,
                code,
            )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (it finishes its tasks and deregisters), then kill after `timeout` s."""
        if self.process is not None and not stop_child(self.process, timeout):
            log.warning("demo publisher did not stop within %.0f s; killed it", timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


def wait_published(
    relay_url: str,
    client_token: str,
    names: Collection[str],
    publisher: DemoPublisher,
    *,
    should_stop: Callable[[], bool],
    timeout: float = 30.0,
) -> bool:
    """Wait until `GET /v1/models` lists every name (False on timeout, stop or publisher exit)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {client_token}"}
    with httpx.Client(base_url=relay_url, headers=headers, timeout=5.0) as client:
        while time.monotonic() < deadline and publisher.running and not should_stop():
            try:
                response = client.get("/v1/models")
                if response.status_code == 200:
                    listed = {item.get("id") for item in response.json().get("data", [])}
                    if set(names) <= listed:
                        return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    return False
