"""What a pool costs in DynamoDB requests: one publisher vs a pool of two, per inference
(c=1 and c=16) and per idle minute, in long-lived and Lambda mode; and how a burst
spreads over three members whose backends answer in 300 ms. Then the smart pools'
figures (tests.perf.smart_pools: affinity, priority classes, capacity-aware dispatch).

    python -m tests.perf.pools [--quick] [--out F.json]

On demand (not collected by pytest); prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from natrelay_infra.moto_server import MotoProcess
from tests.perf import smart_pools
from tests.perf.load import Target, run_load
from tests.perf.procs import CLIENT_TOKEN, Backend, Stack


def _per(ops: dict[str, int], n: float) -> dict[str, float]:
    return {op: round(count / n, 2) for op, count in sorted(ops.items())}


def measure(stack: Stack, target: Target, *, count: int, idle: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 16):
        asyncio.run(run_load(target, concurrency=concurrency, count=8, seconds=20, tag="warm"))
        stack.reset()
        samples = asyncio.run(
            run_load(target, concurrency=concurrency, count=count, seconds=60, tag="load")
        )
        ops = stack.ops()
        done = max(1, len(samples.latencies))
        out[f"c={concurrency}"] = {
            "n": len(samples.latencies),
            "errors": dict(samples.errors),
            "requestsPerInference": round(sum(ops.values()) / done, 2),
            "byOperation": _per(ops, done),
        }
    stack.reset()
    time.sleep(idle)
    ops = stack.ops()
    out["idle"] = {
        "windowSeconds": idle,
        "requestsPerMinute": round(sum(ops.values()) * 60 / idle, 1),
        "byOperation": _per(ops, idle / 60),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    count, idle = (40, 15.0) if args.quick else (120, 30.0)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="natrelay-pools-") as tmp, MotoProcess() as moto:
        logdir = Path(tmp)
        backend = Backend.start("backend", logdir)
        try:
            provider = {
                "name": "m",
                "type": "openai",
                "baseUrl": f"{backend.url}/v1",
                "model": "m1",
                "maxConcurrency": 8,
            }
            for mode in ("longlived", "lambda"):
                for members in (1, 2):
                    name = f"{mode}-{members}"
                    stack = Stack.start(
                        name,
                        moto.endpoint,
                        logdir,
                        [provider],
                        lambda_mode=mode == "lambda",
                        members=members,
                    )
                    try:
                        time.sleep(2)  # every member registered and polling
                        target = Target(name, f"{stack.client_api.url}/v1", CLIENT_TOKEN, "m")
                        results[name] = measure(stack, target, count=count, idle=idle)
                        print(name, json.dumps(results[name]), flush=True)
                    finally:
                        stack.stop()
        finally:
            backend.proc.stop()
        results["smartPools"] = smart_pools.run_phase(moto.endpoint, logdir, args.quick)
    for mode in ("longlived", "lambda"):
        one, two = results[f"{mode}-1"], results[f"{mode}-2"]
        for c in ("c=1", "c=16"):
            extra = two[c]["requestsPerInference"] - one[c]["requestsPerInference"]
            print(
                f"{mode} {c}: 1 member {one[c]['requestsPerInference']}, "
                f"2 members {two[c]['requestsPerInference']} per inference ({extra:+.2f})"
            )
        print(
            f"{mode} idle: 1 member {one['idle']['requestsPerMinute']}/min, "
            f"2 members {two['idle']['requestsPerMinute']}/min"
        )
    print(json.dumps({k: v for k, v in results["smartPools"].items() if not isinstance(v, dict)}))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
