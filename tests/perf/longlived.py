"""The long-lived relay alone (and LiteLLM's proxy, if installed), quickly: what the
fast path adds at c=1 and serves at c=16, and its DynamoDB requests per inference.

`python -m tests.perf.longlived [--c1 N] [--c16 N] [--no-litellm]` — the same processes
as the benchmark (tests/perf/bench.py): a serialized moto server, the echo backend, one
API process under uvicorn with in-process signals and a real publisher process; each
target warmed up, then N requests back to back and N at concurrency 16.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

from natrelay_infra.moto_server import MotoProcess
from tests.perf.bench import FAKE_AWS, providers, relay_target
from tests.perf.load import Target, run_load
from tests.perf.procs import LITELLM_KEY, Backend, start_litellm, start_stacks
from tests.support.net import wait_http


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--c1", type=int, default=200, help="requests back to back")
    parser.add_argument("--c16", type=int, default=480, help="requests at concurrency 16")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    args = parser.parse_args(argv)
    os.environ.update(FAKE_AWS)
    logdir = Path(tempfile.mkdtemp(prefix="natrelay-longlived-"))
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(MotoProcess())
        backend = Backend.start("backend", logdir)
        stack.callback(backend.proc.stop)
        lite = None if args.no_litellm else start_litellm(backend.url, logdir)
        if lite is not None:
            stack.callback(lite[0].stop)
        spec = {
            "name": "longlived",
            "endpoint": moto.endpoint,
            "logdir": logdir,
            "providers": providers(backend),
            "lambda_mode": False,
        }
        relay = start_stacks({"longlived": spec})["longlived"]
        stack.callback(relay.stop)
        targets = {
            "direct": Target("direct", f"{backend.url}/v1", "none", "bench-model"),
            "natrelay": relay_target("longlived", relay),
        }
        if lite is not None:
            wait_http(f"{lite[1]}/health/liveliness", 120, lambda: lite[0].alive)
            targets["litellm"] = Target("litellm", f"{lite[1]}/v1", LITELLM_KEY, "bench")
        for target in targets.values():
            asyncio.run(run_load(target, concurrency=4, count=40, seconds=30))
        floor = None
        for name, target in targets.items():
            relay.reset()
            c1 = asyncio.run(run_load(target, concurrency=1, count=args.c1, seconds=60))
            c16 = asyncio.run(run_load(target, concurrency=16, count=args.c16, seconds=60))
            p50 = statistics.median(c1.latencies) * 1000
            floor = p50 if floor is None else floor
            line = (
                f"{name:9s} p50 c=1 {p50:6.2f} ms (added {p50 - floor:5.2f})  "
                f"req/s c=16 {c16.ok / c16.wall:6.1f}  errors {sum(c1.errors.values())}"
                f"+{sum(c16.errors.values())}"
            )
            if name == "natrelay":
                ops = sum(sum(s["ops"].values()) for s in relay.stats())
                line += f"  DynamoDB requests per inference {ops / (c1.ok + c16.ok):.2f}"
            print(line, flush=True)
    print(f"logs in {logdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
