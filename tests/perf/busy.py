"""What a busy pool member costs beyond an idle one: its work beats (docs/relay.md,
"Failover"), and what a client waiting on its task reads meanwhile.

`python -m tests.perf.busy [--seconds 60]`: a Lambda-mode stack with the doorbell (the
deployed shape, the knob stacks' settings: tests/perf/procs.py IDLE_DOORBELL) and one
publisher. First an idle window, then one as long with two requests running on the
member (a backend that does not answer until the client gives up), each counting the
DynamoDB requests of the API process the publisher talks to; the client's own process
is counted apart. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from natrelay_infra.moto_server import MotoProcess
from tests.perf.procs import IDLE_DOORBELL, Stack
from tests.support.backend import FakeBackend
from tests.support.net import serve
from tests.support.stack import CLIENT_TOKEN

RUNNING = 2


def _per_minute(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    minutes = seconds / 60
    ops: dict[str, int] = stats["ops"]
    return {
        "dynamodbPerMinute": round(sum(ops.values()) / minutes, 2),
        "byOperation": {k: round(v / minutes, 1) for k, v in sorted(ops.items())},
        "writeUnitsPerMinute": round(stats["wru"] / minutes, 2),
        "apiRequestsByKind": {k: round(v / minutes, 2) for k, v in stats["requests"].items()},
    }


def _window(stack: Stack, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(publisher's API process, client's) per minute over a window of `seconds`."""
    stack.reset()
    time.sleep(seconds)
    publisher, client = stack.stats()
    return _per_minute(publisher, seconds), _per_minute(client, seconds)


def busy_member(
    endpoint: str, logdir: Path, seconds: float, settings: dict[str, Any]
) -> dict[str, Any]:
    """Idle, then busy, windows of one publisher on a Lambda-mode stack with `settings`,
    on the moto server at `endpoint`."""
    backend = FakeBackend()
    with serve(backend.app()) as url:
        provider = {"name": "m", "type": "openai", "baseUrl": f"{url}/v1", "model": "hang"}
        stack = Stack.start("busy", endpoint, logdir, [provider], lambda_mode=True, **settings)
        try:
            stack.wait_published(["m"])
            time.sleep(5.0)  # past registration and the first poll
            idle, _ = _window(stack, seconds)

            def ask() -> None:
                # the backend (model `hang`) answers when this client gives up
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
                url = f"{stack.client_api.url}/v1/chat/completions"
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(url, json=body, headers=headers, timeout=seconds + 10)

            asking = [threading.Thread(target=ask, daemon=True) for _ in range(RUNNING)]
            for thread in asking:
                thread.start()
            deadline = time.monotonic() + 30
            while len(backend.requests) < RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
            busy, waiting = _window(stack, seconds)
        finally:
            stack.stop()
    extra = round(busy["dynamodbPerMinute"] - idle["dynamodbPerMinute"], 2)
    return {
        "windowSeconds": seconds,
        "running": RUNNING,
        "idleMember": idle,
        "busyMember": busy,
        "busyMemberExtraPerMinute": extra,
        "waitingClientsProcess": waiting,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with MotoProcess() as moto, tempfile.TemporaryDirectory() as logdir:
        measured = busy_member(moto.endpoint, Path(logdir), args.seconds, IDLE_DOORBELL)
    print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
