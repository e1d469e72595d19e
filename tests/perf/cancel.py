"""How long a busy backend works for a client that hung up (docs/performance.md,
"Cancellation").

`python -m tests.perf.cancel [--rounds 3]`: for each mode (long-lived with the fast path,
long-lived without it, Lambda), a relay stack (counting API processes, tests/perf/procs.py)
and one real publisher at its default heartbeat (30 s) in front of a one-slot backend.
Each round sends a non-streamed request, waits until the backend generates, hangs up (at
points spread over a work beat's period), and times until the backend sees its request
aborted. Prints JSON: seconds per round, by mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from natrelay_infra.moto_server import MotoProcess
from tests.perf.procs import Stack
from tests.publisher.one_slot import OneSlot, solo
from tests.support.net import post_unread, serve
from tests.support.stack import CLIENT_TOKEN

MODES: dict[str, dict[str, Any]] = {
    "server": {"lambda_mode": False},
    "server-no-fast-path": {"lambda_mode": False, "fast_path": False},
    "lambda": {"lambda_mode": True},
}
# Past this, the round counts as never aborted (the publisher's heartbeat is 30 s).
GIVE_UP_SECONDS = 90.0


def _round(stack: Stack, backend: OneSlot, pause: float) -> float | None:
    """Seconds from the client's hang-up, `pause` s into the generation, to the backend's
    abort (None: not within GIVE_UP_SECONDS)."""
    backend.generating.clear()
    backend.aborted.clear()
    backend.release.clear()
    body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
    connection = post_unread(stack.client_api.url, "/v1/chat/completions", body, CLIENT_TOKEN)
    if not backend.generating.wait(60):
        raise RuntimeError("the backend never got the request")
    time.sleep(pause)
    connection.close()
    hung_up = time.monotonic()
    if not backend.aborted.wait(GIVE_UP_SECONDS):
        backend.release.set()
        return None
    return round(time.monotonic() - hung_up, 2)


def measure(endpoint: str, logdir: Path, rounds: int) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    for mode, settings in MODES.items():
        backend = OneSlot()
        with serve(backend.app()) as url:
            stack = Stack.start(f"cancel-{mode}", endpoint, logdir, [solo(url)], **settings)
            try:
                # hang up at points spread over a work beat's period (2.5 s)
                times = [_round(stack, backend, (i * 0.9) % 2.5) for i in range(rounds)]
            finally:
                backend.release.set()
                with contextlib.suppress(Exception):
                    stack.stop()
        done = [t for t in times if t is not None]
        measured[mode] = {
            "secondsToAbort": times,
            "max": max(done) if done else None,
            "neverAborted": len(times) - len(done),
        }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with MotoProcess() as moto, tempfile.TemporaryDirectory() as logdir:
        measured = measure(moto.endpoint, Path(logdir), args.rounds)
    print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
