"""Cold starts: Lambda's INIT phase per handler, and the first request after a quiet while.

INIT: each handler's module imported, and its app built, in a fresh interpreter (what
Lambda's INIT phase runs), with the template's environment, beside the same for a minimal
Starlette + Mangum + boto3 DynamoDB handler (tests/perf/lambda_floor): the floor. The
handlers take turns, so drift on a shared machine hits all alike; the median of the runs
counts. Not in the figure: the interpreter's own start (the same for all), and on AWS the
relay's secret (one Secrets Manager call) and the code's first load from the layer.

First request after idle: the Lambda pool's idle instances are all stopped, then one
request is sent: its API instance starts when it arrives, and so do those that serve the
publisher's claim (the result goes to a warm one, as on AWS); then one request on the
instances now warm, for comparison. The same again with one instance kept warm, as the
publisher's poll once a minute keeps one on AWS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.perf import report
from tests.perf.load import Target, ms, one, percentile
from tests.perf.procs import ROOT, Stack
from tests.support.stack import FAKE_AWS

# What each handler runs at INIT: Lambda puts the function's directory first on sys.path
# and imports its handler module; the stream function's run.sh starts uvicorn on the
# app factory (Config.load imports and builds it, and loads the protocol classes).
HANDLERS = {
    "floor": "import sys; sys.path.insert(0, 'tests/perf/lambda_floor'); import app",
    "api": "import sys; sys.path.insert(0, 'functions/api'); import app",
    "stream": "import uvicorn.main\nfrom uvicorn.config import Config\n"
    "Config('natrelay.web:create_app', factory=True).load()",
    "doorbell": "import sys; sys.path.insert(0, 'functions/doorbell'); import app",
    "sweeper": "import sys; sys.path.insert(0, 'functions/sweeper'); import app",
}
NO_BYTECODE = "api, no bytecode"
_PROBE = """import sys, time
started, cpu = time.perf_counter(), time.process_time()
{code}
print(time.perf_counter() - started, time.process_time() - cpu, len(sys.modules))
"""
# The template's Globals and ApiFunction environment, with stand-in values; the tokens
# instead of the secret (no network at INIT here).
LAMBDA_ENV = {
    **FAKE_AWS,
    "AWS_REGION": FAKE_AWS["AWS_DEFAULT_REGION"],
    "AWS_LAMBDA_FUNCTION_NAME": "natrelay-ApiFunction",
    "NATRELAY_LLMS_TABLE": "natrelay-Llms",
    "NATRELAY_TASKS_TABLE": "natrelay-Tasks",
    "NATRELAY_KEYS_TABLE": "natrelay-Keys",
    "NATRELAY_ADMIN_TOKEN": "init-probe-admin-token-0123456789",
    "NATRELAY_IN_PROCESS_SIGNALS": "false",
    "NATRELAY_LOG_FORMAT": "json",
    "NATRELAY_METRICS": "emf",
    "NATRELAY_DOORBELL_URL": "wss://abc123.execute-api.us-east-1.amazonaws.com/relay",
    "NATRELAY_DOORBELL_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/relay",
    "NATRELAY_REQUEST_TIMEOUT_SECONDS": "25",
}


def init_probe(code: str) -> tuple[float, float, int]:
    """(seconds to run `code` in a fresh interpreter, CPU seconds it took, modules it
    left loaded)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NATRELAY_", "AWS_"))},
        **LAMBDA_ENV,
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"INIT probe failed: {code!r}\n{done.stderr[-2000:]}")
    seconds, cpu, modules = done.stdout.split()[-3:]
    return float(seconds), float(cpu), int(modules)


# What the Lambda runtime itself provides (and compiled): not in the layer.
RUNTIME_PACKAGES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
)
_LOADED = """import sys, sysconfig
sys.path.insert(0, 'functions/api')
import app
skip = sysconfig.get_paths()['stdlib']
for module in list(sys.modules.values()):
    path = getattr(module, '__file__', None) or ''
    if path and not path.startswith(skip) and module.__name__.count('.') == 0:
        print(module.__name__, path)
"""


def uncompiled_layer(dest: Path) -> Path:
    """What the api handler loads from the layer (natrelay and the packages it imports
    from site-packages, less those the Lambda runtime provides), copied into `dest`
    without bytecode: the layer as `sam build` made it before layers/Makefile."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED],
        cwd=ROOT,
        env={**os.environ, **LAMBDA_ENV},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    for line in done.stdout.splitlines():
        name, path = line.split(" ", 1)
        layer = name == "natrelay" or ("site-packages" in path and not name.startswith("_"))
        if name in RUNTIME_PACKAGES or not layer:
            continue
        source = Path(path)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if source.name == "__init__.py":
            shutil.copytree(source.parent, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif source.suffix == ".py":
            shutil.copy2(source, dest / source.name)
    return dest


def init_phase(runs: int) -> dict[str, Any]:
    """Each handler's INIT `runs` times, taking turns with the floor; medians in ms.
    Also the api handler with every module of the layer compiled at INIT, as the
    layer shipped without bytecode made every cold start do (`api, no bytecode`)."""
    names = [*HANDLERS, NO_BYTECODE]
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    modules: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="natrelay-layer-") as layer:
        path = uncompiled_layer(Path(layer))
        probes = {
            **HANDLERS,
            # -B: nothing written, so every run compiles afresh (as on Lambda's read-only /opt)
            NO_BYTECODE: f"sys.dont_write_bytecode = True; sys.path.insert(0, {str(path)!r})\n"
            + HANDLERS["api"],
        }
        for _ in range(runs):
            for name, code in probes.items():
                seconds, used, loaded = init_probe(code)
                times[name].append(seconds)
                cpu[name].append(used)
                modules[name] = loaded
    out: dict[str, Any] = {"runs": runs, "loadAverage": os.getloadavg()[0]}
    floor = statistics.median(times["floor"])
    floor_cpu = statistics.median(cpu["floor"])
    for name, values in times.items():
        median = statistics.median(values)
        median_cpu = statistics.median(cpu[name])
        out[name] = {
            "medianMs": ms(median),
            "minMs": ms(min(values)),
            "maxMs": ms(max(values)),
            "xFloor": round(median / floor, 2),
            "cpuMedianMs": ms(median_cpu),
            "cpuXFloor": round(median_cpu / floor_cpu, 2),
            "modules": modules[name],
        }
    return out


def cold_phase(stack: Stack, target: Target, samples: int) -> dict[str, Any]:
    """First requests after idle: with every instance stopped (`cold`), and with one kept
    warm (`oneWarm`: on AWS the publisher's poll once a minute keeps one `ApiFunction`
    instance alive, which the client's request then takes, so only the claim meets a
    cold one)."""
    return {
        "cold": _first_requests(stack, target, samples, keep=0),
        "oneWarm": _first_requests(stack, target, samples, keep=1),
    }


def _first_requests(stack: Stack, target: Target, samples: int, keep: int) -> dict[str, Any]:
    """`samples` first requests after all idle instances but `keep` were stopped, each
    followed by one on the instances it warmed; latencies, the instances they started,
    and their legs."""

    async def request(client: Any, i: int, tag: str) -> float | None:
        latency, _, error = await one(client, target, f"{tag} {i}", stream=False)
        return None if error else latency

    async def run() -> dict[str, Any]:
        import httpx  # noqa: PLC0415 - the harness has it; kept beside its only use

        cold: list[float] = []
        warm: list[float] = []
        started: list[int] = []
        by_kind: dict[str, int] = {}
        stats: list[dict[str, Any]] = []
        errors = 0
        for i in range(samples):
            await asyncio.to_thread(stack.reap, keep)
            await asyncio.to_thread(stack.reset)
            # a fresh client each time: an idle hour closes kept-alive connections too
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
                first = await request(client, i, f"cold{keep}")
                pool = await asyncio.to_thread(stack.pool_stats)
                stats += pool["instances"]
                started.append(pool["pool"]["started"])
                for kind, n in pool["pool"]["coldRequests"].items():
                    by_kind[kind] = by_kind.get(kind, 0) + n
                second = await request(client, i, "warm")
            for value, into in ((first, cold), (second, warm)):
                if value is None:
                    errors += 1
                else:
                    into.append(value)
        return {
            "samples": samples,
            "errors": errors,
            "coldP50": ms(percentile(cold, 50)),
            "coldMax": ms(max(cold)) if cold else None,
            "warmP50": ms(percentile(warm, 50)),
            "instancesStartedPerRequest": round(sum(started) / len(started), 2),
            "coldRequestsByKind": by_kind,
            "legs": report.legs(report.merge_stats(stats)),
        }

    return asyncio.run(run())
