"""natrelay's benchmark: what the relay adds over calling the backend, and what it costs.

    python -m tests.perf.bench [--quick] [--out results.json] [--markdown results.md]

Runs on 127.0.0.1 only, in one invocation: a fake OpenAI-compatible backend (instant,
and streaming with a fixed token interval), reached directly, through LiteLLM's proxy
(from .venv-litellm, if installed) and through natrelay twice — one long-lived API
process with in-process signals, and "Lambda mode": no signals, one request per API
process, as many processes as the load needs (tests/perf/lambda_pool.py). natrelay runs
on a serialized moto server in its own process, with the real publisher. Also: each
Lambda handler's INIT against a minimal handler's, and the first request after idle
(tests/perf/cold.py). DynamoDB requests are counted with
botocore's event hooks in the API processes (tests/perf/counting_api.py) and the sweeper.
Every load loop is bounded in count and time. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from natrelay.service.assembly import Assembly
from natrelay.settings import Settings
from natrelay.store import Stores
from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames, create_tables
from tests.perf import cpu, report, smart_pools
from tests.perf.busy import busy_member
from tests.perf.cold import cold_phase, init_phase
from tests.perf.load import Samples, Target, isolated, ms, percentile, run_load
from tests.perf.procs import (
    IDLE_DOORBELL,
    LITELLM_KEY,
    ROOT,
    Backend,
    Stack,
    start_litellm,
    start_stacks,
)
from tests.perf.targets import cold_targets, doorbell_targets, fast_path_targets, flat
from tests.support.counting import OpCounter
from tests.support.net import wait_http
from tests.support.stack import CLIENT_TOKEN, FAKE_AWS, dynamodb_client

# Sequential DynamoDB calls on the path of one long-lived, non-streaming inference:
# GetItem row, PutItem task | (signal with the task id) UpdateItem claim | UpdateItem
# result | (signal with the finished task: no read). The poll's Query happens off the path
# (before the task exists), and the waiter makes no first read (a fresh wait), only
# fallback re-reads when the result is slower than its re-check pace. Used only for the
# labelled estimate.
ASSUMED_DYNAMODB_MS = 5.0  # single-digit ms in-region: an assumption, not a measurement
CRITICAL_OPS = ("GetItem", "PutItem", "UpdateItem", "UpdateItem")
# The wake bursts re-check DynamoDB at a slower pace than the default (0.05 s growing to
# 1 s): 100 waiters at the default pace ask the serialized moto server for ~2000 reads a
# second, ~20 times what it serves, and the wake task then queues behind them for tens of
# seconds. Long-lived, in-process signals answer the waiters anyway; see docs/performance.md.
WAKE_PACE = {"poll_min_interval_seconds": 1.0, "poll_max_interval_seconds": 4.0}
# The relay stacks: long-lived; Lambda mode (one request per API process) with the
# doorbell and with the long-poll; and Lambda mode as modelled before, two API processes
# standing in for every Lambda instance (measured at c=16 only, in the full run).
MODES = ("longlived", "lambda", "lambda-longpoll", "lambda-2proc")
# The code the benchmark measures: a change here during a run makes the run void.
CODE = ("layers", "publisher", "infra")


@dataclass
class Profile:
    c1: int = 300
    c16: int = 800
    stream: int = 20
    rounds: int = 2
    load_seconds: float = 10.0  # per target, per round, per load
    warmup: int = 20
    stream_tokens: int = 20
    token_interval_ms: float = 20.0
    idle_seconds: float = 60.0
    isolated: int = 16
    isolated_gap: tuple[float, float] = (1.5, 4.5)
    isolated_seconds: float = 75.0
    wake_requests: int = 100
    wake_seconds: float = 60.0
    wake_delay: float = 0.5
    wake_lambda: bool = True
    init_runs: int = 7  # fresh interpreters per handler for INIT (the median counts)
    cold_samples: int = 5  # first requests after idle
    # c=16 also on the Lambda model before the pool: two API processes for every instance
    two_process_c16: bool = True
    knobs: list[tuple[str, bool, dict[str, float]]] = field(
        default_factory=lambda: [
            ("long-lived", False, {}),
            ("long-lived, doorbell", False, IDLE_DOORBELL),
            ("Lambda, doorbell", True, IDLE_DOORBELL),
            ("Lambda, long-poll", True, {}),
            ("Lambda, long-poll, max 0.3 s", True, {"poll_max_interval_seconds": 0.3}),
        ]
    )
    budget_seconds: float = 560.0  # optional parts are skipped past this


QUICK = Profile(
    c1=60,
    c16=160,
    stream=8,
    rounds=1,
    load_seconds=6.0,
    warmup=5,
    idle_seconds=15.0,
    isolated=5,
    isolated_gap=(1.0, 2.5),
    isolated_seconds=20.0,
    wake_seconds=40.0,
    wake_lambda=False,
    init_runs=5,
    cold_samples=3,
    two_process_c16=False,
    knobs=[
        ("long-lived", False, {}),
        ("Lambda, doorbell", True, IDLE_DOORBELL),
        ("Lambda, long-poll", True, {}),
    ],
    budget_seconds=150.0,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def providers(backend: Backend) -> list[dict[str, Any]]:
    return [
        {
            "name": "bench",
            "type": "openai",
            "baseUrl": f"{backend.url}/v1",
            "model": "bench-model",
            "maxConcurrency": 32,
        }
    ]


def sleepy_provider(sleepy: Backend) -> dict[str, Any]:
    """Asleep at start (published hibernating); its `http` recipe returns once it is up."""
    return {
        "name": "sleepy",
        "type": "openai",
        "baseUrl": f"{sleepy.url}/v1",
        "model": "bench-model",
        "maxConcurrency": 128,
        "wake": {
            "type": "http",
            "url": f"{sleepy.url}/_fake/wake",
            "method": "POST",
            "maxWaitSeconds": 30,
        },
    }


def relay_target(name: str, stack: Stack, model: str = "bench") -> Target:
    return Target(name, f"{stack.client_api.url}/v1", CLIENT_TOKEN, model)


# --- phases --------------------------------------------------------------------------------


def moto_cost(endpoint: str, n: int) -> dict[str, dict[str, float | None]]:
    """Round trip of single calls to the serialized moto server, from a plain boto3 client."""
    client = dynamodb_client(endpoint)
    tables = TableNames.with_prefix(f"motocost-{os.getpid()}-")
    create_tables(client, tables)
    row = {"name": {"S": "x"}, "status": {"S": "active"}, "sessionId": {"S": "s"}}
    client.put_item(TableName=tables.llms, Item=row)
    calls: dict[str, Callable[[int], Any]] = {
        "GetItem": lambda i: client.get_item(
            TableName=tables.llms, Key={"name": {"S": "x"}}, ConsistentRead=True
        ),
        "Query": lambda i: client.query(
            TableName=tables.tasks,
            IndexName="byPool",
            KeyConditionExpression="#q = :s",
            ExpressionAttributeNames={"#q": "queue"},
            ExpressionAttributeValues={":s": {"S": "nobody"}},
            Limit=4,
        ),
        "PutItem": lambda i: client.put_item(
            TableName=tables.tasks,
            Item={"pk": {"S": f"task#{i}"}, "sk": {"S": "m"}, "state": {"S": "pending"}},
        ),
        "UpdateItem": lambda i: client.update_item(
            TableName=tables.llms,
            Key={"name": {"S": "x"}},
            UpdateExpression="SET lastHeartbeatAt = :now",
            ExpressionAttributeValues={":now": {"N": str(i)}},
        ),
    }
    out: dict[str, dict[str, float | None]] = {}
    for op, call in calls.items():
        for i in range(10):
            call(-i - 1)
        times = []
        for i in range(n):
            started = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - started)
        out[op] = {"p50": ms(percentile(times, 50)), "p95": ms(percentile(times, 95))}
    return out


def warm_up(target: Target, profile: Profile, stack: Stack | None = None) -> None:
    """A few requests; on a Lambda pool, c=16 until it starts no more instances (the
    phases measure warm instances: cold ones have a phase of their own)."""
    asyncio.run(run_load(target, concurrency=1, count=profile.warmup, seconds=5))
    asyncio.run(run_load(target, concurrency=16, count=16, seconds=5))
    for _ in range(5 if stack is not None and stack.pool else 0):
        live = stack.pool_stats()["pool"]["live"]
        asyncio.run(run_load(target, concurrency=16, count=64, seconds=30, tag="warm"))
        if stack.pool_stats()["pool"]["live"] == live:
            break
    asyncio.run(run_load(target, concurrency=1, count=2, seconds=5, stream=True, tag="warm"))


@dataclass
class Measured:
    samples: Samples = field(default_factory=Samples)
    stats: list[dict[str, Any]] = field(default_factory=list)
    # CPU seconds by group of processes while this target ran (see cpu_groups)
    cpu: dict[str, float] = field(default_factory=dict)
    # the Lambda pool's counts after each round (instances started, cold requests, ...)
    pool: list[dict[str, Any]] = field(default_factory=list)

    def cores(self) -> dict[str, dict[str, float]]:
        return cpu.shares({}, self.cpu, self.samples.wall)


def cpu_groups(stack: Stack | None, fixed: dict[str, list[int]]) -> dict[str, list[int]]:
    """The processes whose CPU a load phase notes: moto, the backend (`fixed`), and the
    stack's relay (API processes, or the pool with its instances), publisher and gateway."""
    groups = dict(fixed)
    if stack is not None:
        groups["relay API"] = [api.proc.process.pid for api in stack.apis]
        groups["publisher"] = [p.process.pid for p in stack.publishers]
        if stack.gateway is not None:
            groups["gateway"] = [stack.gateway.proc.process.pid]
    return groups


def load_phase(
    targets: dict[str, Target],
    stacks: dict[str, Stack],
    profile: Profile,
    *,
    concurrency: int,
    count: int,
    stream: bool = False,
    fixed: dict[str, list[int]] | None = None,
) -> dict[str, Measured]:
    """Each target in turn, `profile.rounds` times (interleaved, so drift hits all alike).

    With `fixed` (moto's and the backend's pids), the CPU each group of processes used
    while each target ran (the harness: this process alone, the load's client)."""
    out = {name: Measured() for name in targets}
    per_round = max(1, count // profile.rounds)
    for r in range(profile.rounds):
        for name, target in targets.items():
            stack = stacks.get(name)
            if stack is not None:
                stack.reset()
            groups = cpu_groups(stack, fixed or {})
            before = {**cpu.snapshot(groups), "harness (client)": cpu.own_seconds()}
            samples = asyncio.run(
                run_load(
                    target,
                    concurrency=concurrency,
                    count=per_round,
                    seconds=profile.load_seconds,
                    stream=stream,
                    tokens=profile.stream_tokens if stream else 0,
                    tag=f"{name}-c{concurrency}-r{r}",
                )
            )
            after = {**cpu.snapshot(groups), "harness (client)": cpu.own_seconds()}
            if fixed is not None:
                for group, seconds in after.items():
                    used = seconds - before.get(group, seconds)
                    out[name].cpu[group] = out[name].cpu.get(group, 0.0) + used
            out[name].samples.extend(samples)
            if stack is not None and stack.pool:
                pool = stack.pool_stats()
                out[name].stats += pool["instances"]
                out[name].pool.append(pool["pool"])
            elif stack is not None:
                out[name].stats += stack.stats()
            log(
                f"  {name:10s} c={concurrency} {'stream ' if stream else ''}round {r + 1}: "
                f"{samples.ok} ok, {sum(samples.errors.values())} errors, "
                f"p50 {ms(percentile(samples.ttft if stream else samples.latencies, 50))} ms"
            )
    return out


def wake_phase(endpoint: str, logdir: Path, mode: str, profile: Profile) -> dict[str, Any]:
    """A fresh stack whose only provider sleeps; `wake_requests` first requests at once."""
    sleepy = Backend.start(
        f"sleepy-{mode}", logdir, "--asleep", "--wake-delay", str(profile.wake_delay)
    )
    try:
        stack = Stack.start(
            f"wake-{mode}",
            endpoint,
            logdir,
            [sleepy_provider(sleepy)],
            lambda_mode=mode == "lambda",
            doorbell=mode == "lambda",
            **WAKE_PACE,
        )
        try:
            return {**wake_burst(stack, sleepy, profile), "settings": WAKE_PACE}
        finally:
            stack.stop()
    finally:
        sleepy.proc.stop()


def wake_burst(stack: Stack, sleepy: Backend, profile: Profile) -> dict[str, Any]:
    stack.reset()
    target = relay_target("wake", stack, "sleepy")
    started = time.time()
    samples = asyncio.run(
        run_load(
            target,
            concurrency=profile.wake_requests,
            count=profile.wake_requests,
            seconds=profile.wake_seconds,
            tag="wake",
        )
    )
    up = sleepy.state().get("upAt")
    stats = report.merge_stats(stack.stats())
    last = max(samples.finished_at) if samples.finished_at else None
    return {
        "requests": profile.wake_requests,
        "ok": samples.ok,
        "errors": dict(samples.errors),
        "wakeTasks": stack.wake_tasks_written(),
        "wakeTaskPuts": len(stats["events"].get("wake_put", {})),
        "upToAllAnsweredMs": round((last - up) * 1000, 1) if last and up else None,
        "firstRequestToAllAnsweredMs": round((last - started) * 1000, 1) if last else None,
        "requestToBackendUpMs": round((up - started) * 1000, 1) if up else None,
        "latencyP50Ms": ms(percentile(samples.latencies, 50)),
        "dynamodbRequests": sum(stats["ops"].values()),
        "byOperation": stats["ops"],
    }


async def counted_sweep(stack: Stack) -> dict[str, Any]:
    """One sweep, as the scheduled sweeper runs it, with its DynamoDB requests counted."""
    settings = Settings(
        llms_table=stack.tables.llms,
        tasks_table=stack.tables.tasks,
        dynamodb_endpoint=stack.endpoint,
        region="us-east-1",
    )
    stores = Stores.connect(settings)
    counter = OpCounter()
    counter.attach(stores.client)
    started = time.perf_counter()
    await Assembly(settings, stores=stores).sweeper.run()
    seconds = time.perf_counter() - started
    snap = counter.snapshot()
    return {
        "requests": sum(snap["ops"].values()),
        "ops": snap["ops"],
        "readUnits": snap["rru"],
        "writeUnits": snap["wru"],
        "seconds": round(seconds, 4),
    }


def knobs_phase(
    endpoint: str, logdir: Path, backend: Backend, profile: Profile, deadline: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Idle cost and isolated-request dispatch of fresh one-provider stacks, side by side."""
    stacks: dict[str, Stack] = {}
    out: dict[str, Any] = {}
    sweep = None
    try:
        specs = {
            name: {
                "name": f"knob{i}",
                "endpoint": endpoint,
                "logdir": logdir,
                "providers": providers(backend),
                "lambda_mode": lambda_mode,
                **settings,
            }
            for i, (name, lambda_mode, settings) in enumerate(profile.knobs)
        }
        stacks.update(start_stacks(specs))
        time.sleep(5.0)  # past registration and the first poll's start
        for stack in stacks.values():
            stack.reset()
        log(f"  idle window: {profile.idle_seconds:g} s, {len(stacks)} stacks")
        started = time.monotonic()
        time.sleep(profile.idle_seconds)
        elapsed = time.monotonic() - started
        idle = {name: report.merge_stats(stack.stats()) for name, stack in stacks.items()}
        default = next((s for n, s in stacks.items() if s.lambda_mode), None)
        if default is not None:
            sweep = asyncio.run(counted_sweep(default))
        for stack in stacks.values():
            stack.reset()
        log(f"  isolated requests: {profile.isolated} per stack")

        async def all_isolated() -> list[Samples]:
            return await asyncio.gather(
                *(
                    isolated(
                        relay_target(name, stack),
                        count=profile.isolated,
                        gap=profile.isolated_gap,
                        seconds=profile.isolated_seconds,
                        seed=i,
                    )
                    for i, (name, stack) in enumerate(stacks.items())
                )
            )

        samples = asyncio.run(all_isolated())
        for (name, stack), sample in zip(stacks.items(), samples, strict=True):
            stats = report.merge_stats(stack.stats())
            rates = report.idle_rates(idle[name], elapsed, doorbell=stack.doorbell)
            if stack.gateway is not None and stack.publisher is not None:
                # its connection closes: the gateway counts what $disconnect costs too
                stack.publisher.stop(timeout=15)
                report.connection_costs(rates, stack.gateway_stats())
            out[name] = {
                "settings": {
                    "in_process_signals": not stack.lambda_mode,
                    "doorbell": stack.doorbell,
                    **dict(stack.settings),
                },
                "idle": rates,
                "month": report.idle_month(rates, lambda_mode=stack.lambda_mode),
                "dispatch": report.dispatch(stats),
                "pickup": report.result_pickup(stats, sample.finished_at),
                "isolatedLatency": sample.summary(),
            }
    finally:
        for stack in stacks.values():
            stack.stop()
    return out, sweep


# --- the run -----------------------------------------------------------------------------


def added(lat: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = lat.get("direct", {})
    out: dict[str, dict[str, Any]] = {}
    for name, s in lat.items():
        if name == "direct":
            continue
        out[name] = {
            q: round(s[q] - base[q], 2) if s.get(q) is not None and base.get(q) else None
            for q in ("p50", "p95", "p99")
        }
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadBefore": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def targets_met(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    a = r["added"]["c1"]
    ll, lite = a.get("longlived", {}).get("p50"), a.get("litellm", {}).get("p50")
    out.append(
        {
            "target": "p50 added latency, c=1, long-lived ≤ LiteLLM's",
            "met": ll is not None and lite is not None and ll <= lite,
            "measured": f"natrelay {ll} ms vs LiteLLM {lite} ms"
            if lite is not None
            else f"natrelay {ll} ms; LiteLLM not measured",
        }
    )
    out += doorbell_targets(r)
    out += fast_path_targets(r)
    out += cold_targets(r)
    per = r["dynamodb"].get("longlived", {}).get("c=1", {})
    out.append(
        {
            "target": "non-streaming inference ≤ 6 DynamoDB requests, long-lived",
            "met": per.get("requests", 99) <= 6,
            "measured": f"{per.get('requests')} per inference at c=1 "
            f"({r['dynamodb'].get('longlived', {}).get('c=16', {}).get('requests')} at c=16)",
        }
    )
    for mode, w in (r.get("wake") or {}).items():
        out.append(
            {
                "target": f"wake ({report.TARGET_LABELS[mode]}): one wake task for "
                f"{w['requests']} first requests",
                "met": w["wakeTasks"] == 1 and w["ok"] == w["requests"],
                "measured": f"{w['wakeTasks']} wake task(s), {w['ok']}/{w['requests']} answered, "
                f"{w['upToAllAnsweredMs']} ms from backend up to the last answer",
            }
        )
    return out


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkout() -> tuple[str, str]:
    """The commit and the uncommitted changes to the relay's code, to compare start and end."""
    return git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", *CODE)


def run(profile: Profile, args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    at_start = checkout()
    deadline = t_start + profile.budget_seconds
    os.environ.update(FAKE_AWS)
    logdir = Path(tempfile.mkdtemp(prefix="natrelay-bench-"))
    log(f"logs in {logdir}")
    r: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": at_start[0],
            "dirty": bool(at_start[1]),
            "command": "python -m tests.perf.bench" + (" --quick" if args.quick else ""),
            "machine": machine(),
            "profile": {
                **{k: v for k, v in asdict(profile).items() if k != "knobs"},
                "streamTokens": profile.stream_tokens,
                "tokenIntervalMs": profile.token_interval_ms,
                "isolatedGap": profile.isolated_gap,
            },
            "prices": report.PRICES,
            "notes": [],
        }
    }
    notes: list[str] = r["meta"]["notes"]
    log(f"INIT of each handler, {profile.init_runs} fresh interpreters each")
    r["init"] = init_phase(profile.init_runs)
    log(f"  {r['init']}")
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(MotoProcess())
        log(f"moto at {moto.endpoint}")
        backend = Backend.start(
            "backend",
            logdir,
            "--stream-tokens",
            str(profile.stream_tokens),
            "--token-interval-ms",
            str(profile.token_interval_ms),
        )
        stack.callback(backend.proc.stop)
        lite = None if args.no_litellm else start_litellm(backend.url, logdir)
        if lite is not None:
            stack.callback(lite[0].stop)
        elif not args.no_litellm:
            notes.append("LiteLLM not installed (.venv-litellm): its rows are missing")
        stacks = start_stacks(
            {
                mode: {
                    "name": mode,
                    "endpoint": moto.endpoint,
                    "logdir": logdir,
                    "providers": providers(backend),
                    "lambda_mode": mode != "longlived",
                    "doorbell": mode in ("lambda", "lambda-2proc"),
                    "pool": mode in ("lambda", "lambda-longpoll"),
                }
                for mode in MODES[: 4 if profile.two_process_c16 else 3]
            }
        )
        for relay in stacks.values():
            stack.callback(relay.stop)
        log(f"relay stacks up after {time.monotonic() - t_start:.0f} s")
        r["moto"] = moto_cost(moto.endpoint, 100 if args.quick else 200)
        log(f"moto per call: {r['moto']}")
        direct = Target("direct", f"{backend.url}/v1", "none", "bench-model")
        relays = {mode: relay_target(mode, relay) for mode, relay in stacks.items()}
        warm_up(direct, profile)
        for mode, target in relays.items():
            warm_up(target, profile, stacks[mode])
        targets = {"direct": direct}
        if lite is not None:
            try:
                wait_http(f"{lite[1]}/health/liveliness", 120, lambda: lite[0].alive)
                targets["litellm"] = Target("litellm", f"{lite[1]}/v1", LITELLM_KEY, "bench")
                warm_up(targets["litellm"], profile)
            except (TimeoutError, RuntimeError) as exc:
                notes.append(f"LiteLLM did not start ({exc}); see {lite[0].log}")
        targets.update(relays)
        # the Lambda model before the pool: measured at c=16 only, for comparison
        old_model = {k: targets.pop(k) for k in ("lambda-2proc",) if k in targets}
        log(f"started and warmed up everything in {time.monotonic() - t_start:.0f} s")
        fixed = {"moto": [moto.pid], "backend": [backend.proc.process.pid]}
        log("non-streaming, c=1")
        c1 = load_phase(targets, stacks, profile, concurrency=1, count=profile.c1, fixed=fixed)
        log("non-streaming, c=16")
        everyone = {**targets, **old_model}
        c16 = load_phase(everyone, stacks, profile, concurrency=16, count=profile.c16, fixed=fixed)
        log("streaming, c=1")
        st = load_phase(targets, stacks, profile, concurrency=1, count=profile.stream, stream=True)
        log(f"first requests after idle: {profile.cold_samples}")
        r["cold"] = cold_phase(stacks["lambda"], relays["lambda"], profile.cold_samples)
        log(f"  {r['cold']}")
        r["latency"] = {
            "c1": {n: m.samples.summary() for n, m in c1.items()},
            "c16": {n: m.samples.summary() for n, m in c16.items()},
            "stream": {n: m.samples.summary(ttft=True) for n, m in st.items()},
        }
        r["added"] = {
            "c1": added(r["latency"]["c1"]),
            "c16": added(r["latency"]["c16"]),
            "stream": added(r["latency"]["stream"]),
        }
        r["dynamodb"] = {}
        r["dispatchUnderLoad"] = {}
        r["pickupUnderLoad"] = {}
        r["timeline"] = {}
        r["legs"] = {}
        r["cpu"] = {"c16": {name: m.cores() for name, m in c16.items() if m.cpu}}
        r["pool"] = {name: m.pool for name, m in c16.items() if m.pool}
        for mode in old_model:
            r["legs"][mode] = {"c=16": report.legs(report.merge_stats(c16[mode].stats))}
        for mode in (m for m in stacks if m not in old_model):
            merged = {
                label: report.merge_stats(m[mode].stats)
                for label, m in (("c=1", c1), ("c=16", c16), ("stream", st))
            }
            r["dynamodb"][mode] = {
                label: report.per_inference(stats, src[mode].samples.ok)
                for (label, stats), src in zip(merged.items(), (c1, c16, st), strict=True)
            }
            r["dispatchUnderLoad"][mode] = report.dispatch(merged["c=1"])
            r["pickupUnderLoad"][mode] = report.result_pickup(
                merged["c=1"], c1[mode].samples.finished_at
            )
            r["timeline"][mode] = report.timeline(
                merged["c=1"], c1[mode].samples.started_at, c1[mode].samples.finished_at
            )
            if stacks[mode].lambda_mode:
                r["legs"][mode] = {k: report.legs(merged[k]) for k in ("c=1", "c=16")}

        for relay in stacks.values():
            relay.stop()

        log("wake bursts")
        r["wake"] = {}
        for mode in ("longlived", "lambda") if profile.wake_lambda else ("longlived",):
            if mode == "lambda" and time.monotonic() > deadline - 200:
                notes.append("Lambda-mode wake burst skipped: over the time budget")
                continue
            r["wake"][mode] = wake_phase(moto.endpoint, logdir, mode, profile)
            log(f"  {mode}: {r['wake'][mode]}")

        log("smart pools (affinity, priority classes, capacity-aware dispatch)")
        r["pools"] = smart_pools.run_phase(moto.endpoint, logdir, args.quick)
        log(f"  { ({k: v for k, v in r['pools'].items() if not isinstance(v, dict)}) }")

        log("idle cost and dispatch (knobs)")
        r["knobs"], r["sweep"] = knobs_phase(moto.endpoint, logdir, backend, profile, deadline)
        # work beats are steady (one per 2.5 s): a half-minute window shows them
        seconds = min(profile.idle_seconds, 30.0)
        if time.monotonic() < deadline - 2 * seconds - 20:
            log("a busy member's work beats")
            r["busyMember"] = busy_member(moto.endpoint, logdir, seconds, IDLE_DOORBELL)
            log(f"  extra DynamoDB requests/min: {r['busyMember']['busyMemberExtraPerMinute']}")
        else:
            notes.append("busy member skipped: over the time budget")
        doorbell = r["knobs"].get("Lambda, doorbell")
        longpoll = r["knobs"].get("Lambda, long-poll")
        r["cost"] = {
            "idleMonth": doorbell["month"] if doorbell else {},
            "idleMonthLongPoll": longpoll["month"] if longpoll else {},
            "millionInferences": report.million_inferences(
                r["dynamodb"]["lambda"]["c=1"], doorbell=True
            ),
            "millionInferencesLongPoll": report.million_inferences(
                r["dynamodb"]["lambda-longpoll"]["c=1"]
            ),
            "snapStart": {
                "ApiFunction": report.snapstart(report.LAMBDA_MEMORY_GB),
                "PollFunction": report.snapstart(report.POLL_MEMORY_GB),
            },
        }
        ll = r["dynamodb"]["longlived"]["c=1"]
        p50s = ll.get("dynamodbP50MsPerCall", {})
        if all(p50s.get(op) is not None for op in CRITICAL_OPS):
            in_dynamo = sum(p50s[op] for op in CRITICAL_OPS)
            measured = r["added"]["c1"]["longlived"]["p50"]
            r["estimate"] = {
                "criticalOps": CRITICAL_OPS,
                "criticalMsHere": round(in_dynamo, 1),
                "assumedDynamoMs": ASSUMED_DYNAMODB_MS,
                "measuredP50": measured,
                "longlivedAddedP50": round(
                    measured - in_dynamo + len(CRITICAL_OPS) * ASSUMED_DYNAMODB_MS, 1
                ),
            }
    r["targets"] = targets_met(r)
    r.update(flat(r))
    at_end = checkout()
    r["meta"]["changedDuringRun"] = at_end != at_start
    if at_end != at_start:
        # processes started at different moments may run different code: do not publish
        notes.append(
            f"the checkout changed during the run (commit {at_start[0]} -> {at_end[0]}, "
            f"uncommitted changes to {', '.join(CODE)}: "
            f"{'yes' if at_start[1] else 'no'} -> {'yes' if at_end[1] else 'no'}); run it again"
        )
    r["meta"]["durationSeconds"] = round(time.monotonic() - t_start, 1)
    r["meta"]["logs"] = str(logdir)
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the markdown report here")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else Profile()
    try:
        with stopping_on_sigterm():
            results = run(profile, args)
    except KeyboardInterrupt:
        log("interrupted: every process was stopped")
        return 130
    text = report.markdown(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
