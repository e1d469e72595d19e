"""What an agent adds over calling its target row directly through the relay: the
long-lived relay (uvicorn + a serialized moto server), a real publisher process with
the echo provider, and an agent of that publisher targeting it (a system prompt and
two defaults); also an admin's agent, and a pool by model of one row.

    .venv/bin/python -m tests.perf.agents [--n 400] [--out FILE]

Sequential requests on kept-alive connections, the row and each agent in turn (so
drift on a shared machine falls on all alike); numbers in ms. On demand only (not a
test): a shared machine's numbers drift between runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoServer
from tests.perf.public_rows import _stats, measure
from tests.publisher.running import publisher_config, start_publisher, wait_rows
from tests.support.net import wait_until
from tests.support.stack import running_stack

HI = [{"role": "user", "content": "hi"}]
NAMES = ("echo", "echo-agent", "admin-agent", "pool-agent")


def run(n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="natrelay-agents-bench-"))
    with MotoServer() as moto, running_stack(moto.endpoint) as stack:
        config = publisher_config(stack, tmp, [{"name": "echo", "type": "echo"}])
        config["agents"] = [
            {
                "name": "echo-agent",
                "target": "echo",
                "systemPrompt": "You are a benchmark.",
                "defaults": {"temperature": 0, "seed": 1},
            },
            {"name": "pool-agent", "target": {"model": "echo"}, "systemPrompt": "Pool."},
        ]
        publisher = start_publisher(config, tmp)
        try:
            wait_rows(stack, {"echo": "active"})
            admin = {"Authorization": f"Bearer {stack.admin_token}"}
            doc = {"name": "admin-agent", "target": "echo", "systemPrompt": "Admin's."}
            httpx.post(
                f"{stack.url}{Paths.AGENTS_APPLY}", headers=admin, json={"documents": [doc]}
            ).raise_for_status()
            relay = httpx.Client(
                headers={"Authorization": f"Bearer {stack.client_token}"}, timeout=30
            )

            def call(model: str) -> float:
                t0 = time.perf_counter()
                resp = relay.post(f"{stack.url}{Paths.CHAT}", json={"model": model, "messages": HI})
                resp.raise_for_status()
                return (time.perf_counter() - t0) * 1000

            wait_until(lambda: all(call(m) > 0 for m in NAMES), 30)
            for _ in range(max(20, n // 10)):  # warm up every path
                for model in NAMES:
                    call(model)
            samples: dict[str, list[float]] = {m: [] for m in NAMES}
            for _ in range(n):
                for model in NAMES:
                    samples[model].append(call(model))
            relay.close()
        finally:
            publisher.stop()
    out: dict[str, Any] = {"n": n, **{m: _stats(s) for m, s in samples.items()}}
    for model in NAMES[1:]:
        out[f"added p50 {model}"] = round(out[model]["p50"] - out["echo"]["p50"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    return measure(run, argv, __doc__.splitlines()[0], 400)


if __name__ == "__main__":
    sys.exit(main())
