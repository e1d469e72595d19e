"""Smart pools, measured: affinity, priority classes and capacity-aware dispatch, each
against today's dispatch (the feature off) on the same trace in the same run, with real
publisher processes in front of a fake prefix-cache backend (tests.perf.prefix_backend;
the pool and the conversations: tests.perf.pool_driver); and DynamoDB requests per
inference in Lambda mode with affinity on and off.

    python -m tests.perf.smart_pools [--quick] [--out F.json]

Also a phase of `python -m tests.perf.pools` and of scripts/bench (flat keys
`pools.affinity_ttft_gain`, `pools.interactive_wait_p95_ms`, `pools.fast_share_ratio`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from natrelay_infra.moto_server import MotoProcess
from tests.perf.pool_driver import (
    IdleWatch,
    Profile,
    boxes_of,
    conversations,
    gain,
    pct,
    pool_stack,
    pool_view,
    ttft_figures,
)
from tests.perf.prefix_backend import PrefixBackend
from tests.support.net import serve
from tests.support.stack import ADMIN_TOKEN, CLIENT_TOKEN

QUICK = Profile(conversations=12, turns=6, workers=8, overload_seconds=8, share_seconds=8)


def affinity_phase(
    moto: str, logdir: Path, backend: PrefixBackend, url: str, profile: Profile
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm, wait in (("today", 0.0), ("affinity", 2.0)):
        boxes = [f"{arm}{i}-1" for i in range(3)]
        urls = boxes_of(url, boxes)
        with pool_stack(f"aff-{arm}", moto, logdir, urls, affinity_wait_seconds=wait) as s:
            watch = IdleWatch(backend, boxes)
            turns = asyncio.run(conversations(s.client_api.url, profile, watch))
            pool = pool_view(s)
        out[arm] = {
            **ttft_figures(turns, profile),
            "servedPerBox": {b: backend.boxes[b].served for b in boxes},
            **watch.figures(),
            "affinityHits": pool.get("affinityHits"),
            "affinityMisses": pool.get("affinityMisses"),
        }
        print("affinity", arm, json.dumps(out[arm]), flush=True)
    out["ttftGain"] = gain(out)
    return out


# --- open-loop load ----------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    latency: float
    box_seconds: float
    box: str
    ok: bool

    @property
    def waited(self) -> float:
        """Its time in the relay and publisher: all but the box's own work."""
        return max(0.0, self.latency - self.box_seconds)


async def open_loop(url: str, token: str, rate: float, seconds: float, tag: str) -> list[Done]:
    """`rate` requests a second for `seconds`, each answered whenever it is."""

    async def one(http: httpx.AsyncClient, n: int) -> Done:
        start = time.monotonic()
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} {n} hello"}]}
        resp = await http.post(f"{url}/v1/chat/completions", json=body)
        latency = time.monotonic() - start
        if resp.status_code != 200:
            return Done(latency, 0.0, "", False)
        box = resp.json().get("x_box") or {}
        return Done(latency, float(box.get("seconds", 0.0)), str(box.get("name", "")), True)

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=300, limits=limits) as http:
        start, jobs = time.monotonic(), []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            jobs.append(asyncio.create_task(one(http, n)))
        return list(await asyncio.gather(*jobs))


def batch_key(url: str) -> str:
    spec = {"role": "client", "label": "nightly batch", "priority": "batch"}
    resp = httpx.post(
        f"{url}/api/v1/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, json=spec
    )
    resp.raise_for_status()
    secret: str = resp.json()["secret"]
    return secret


def priority_phase(moto: str, logdir: Path, url: str, profile: Profile) -> dict[str, Any]:
    """One member (a box of 2 slots, ~0.45 s a request: ~4 requests/s); a batch key sends
    twice that for `overload_seconds`, interactive requests come at 1 a second. (Waiting
    clients re-read DynamoDB every 5 s, not 1: the wake-ups tell them first, and moto
    serves ~140 requests a second in all.)"""
    out: dict[str, Any] = {}
    for arm, aging in (("today", 0.0), ("classes", 60.0)):
        # (today: batch and interactive requests in one first-in, first-out queue)
        with pool_stack(
            f"prio-{arm}",
            moto,
            logdir,
            boxes_of(url, [f"prio{arm}-4"]),
            batch_aging_seconds=aging,
            poll_max_interval_seconds=5,
        ) as s:
            api = s.client_api.url
            nightly = batch_key(api)
            capacity = 4.0

            async def both(api: str = api, key: str = nightly) -> tuple[list[Done], list[Done]]:
                seconds = profile.overload_seconds
                batch = open_loop(api, key, 2 * capacity, seconds, "batch")
                people = open_loop(api, CLIENT_TOKEN, 1.0, seconds, "interactive")
                got = await asyncio.gather(batch, people)
                return got[0], got[1]

            batch, people = asyncio.run(both())
        out[arm] = {
            "interactive": _waits(people),
            "batch": _waits(batch),
        }
        print("priority", arm, json.dumps(out[arm]), flush=True)
    return out


def _waits(done: list[Done]) -> dict[str, Any]:
    ok = [d.waited for d in done if d.ok]
    return {
        "n": len(done),
        "errors": sum(not d.ok for d in done),
        "waitP50Ms": pct(ok, 0.5),
        "waitP95Ms": pct(ok, 0.95),
        "waitP99Ms": pct(ok, 0.99),
        "waitMaxMs": pct(ok, 1.0),
    }


def share_phase(
    moto: str, logdir: Path, backend: PrefixBackend, url: str, profile: Profile
) -> dict[str, Any]:
    """Two members, one box three times slower than the other; 8 requests a second."""
    out: dict[str, Any] = {}
    for arm, by_speed in (("today", False), ("bySpeed", True)):
        fast, slow = f"fast{arm}-1", f"slow{arm}-3"
        with pool_stack(
            f"share-{arm}", moto, logdir, boxes_of(url, [fast, slow]), dispatch_by_speed=by_speed
        ) as s:
            done = asyncio.run(
                open_loop(s.client_api.url, CLIENT_TOKEN, 8.0, profile.share_seconds, "share")
            )
        counts = {fast: 0, slow: 0}
        for d in done:
            if d.box in counts:
                counts[d.box] += 1
        out[arm] = {
            "n": len(done),
            "errors": sum(not d.ok for d in done),
            "fastServed": counts[fast],
            "slowServed": counts[slow],
            "fastShareRatio": round(counts[fast] / counts[slow], 2) if counts[slow] else None,
            "latencyP50Ms": pct([d.latency for d in done if d.ok], 0.5),
            "latencyP95Ms": pct([d.latency for d in done if d.ok], 0.95),
        }
        print("share", arm, json.dumps(out[arm]), flush=True)
    return out


# --- DynamoDB in Lambda mode ---------------------------------------------------------------


def lambda_phase(moto: str, logdir: Path, url: str, profile: Profile) -> dict[str, Any]:
    """DynamoDB requests per inference in Lambda mode (two members on the doorbell, as
    deployed), conversations of 4 turns one request at a time: affinity off and on."""
    out: dict[str, Any] = {}
    for arm, wait in (("today", 0.0), ("affinity", 2.0)):
        boxes = [f"lam{arm}{i}-1" for i in range(2)]
        with pool_stack(
            f"lam-{arm}",
            moto,
            logdir,
            boxes_of(url, boxes),
            lambda_mode=True,
            doorbell=True,
            affinity_wait_seconds=wait,
        ) as s:
            one = Profile(conversations=1, turns=2, workers=1, think=(0.0, 0.0))
            asyncio.run(conversations(s.client_api.url, one))
            s.reset()
            n = profile.lambda_conversations
            load = Profile(conversations=n, turns=4, workers=1, think=(0.0, 0.0))
            turns = asyncio.run(conversations(s.client_api.url, load, seed=11))
            ops = s.ops()
            out[arm] = {
                "n": len(turns),
                "requestsPerInference": round(sum(ops.values()) / len(turns), 2),
                "byOperation": {op: round(n / len(turns), 2) for op, n in sorted(ops.items())},
            }
        print("lambda", arm, json.dumps(out[arm]), flush=True)
    out["extraPerInference"] = round(
        out["affinity"]["requestsPerInference"] - out["today"]["requestsPerInference"], 2
    )
    return out


def run_phase(moto: str, logdir: Path, quick: bool) -> dict[str, Any]:
    """Every smart-pools figure (a fake prefix-cache backend served in this process)."""
    profile = QUICK if quick else Profile()
    backend = PrefixBackend()
    with serve(backend.app()) as url:
        r: dict[str, Any] = {"profile": profile.__dict__}
        r["affinity"] = affinity_phase(moto, logdir, backend, url, profile)
        r["priority"] = priority_phase(moto, logdir, url, profile)
        r["share"] = share_phase(moto, logdir, backend, url, profile)
        r["lambda"] = lambda_phase(moto, logdir, url, profile)
    r.update(headline(r))
    return r


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The three headline figures, as flat keys."""
    return {
        "affinityTtftGain": r["affinity"]["ttftGain"],
        "interactiveWaitP95Ms": r["priority"]["classes"]["interactive"]["waitP95Ms"],
        "fastShareRatio": r["share"]["bySpeed"]["fastShareRatio"],
        "lambdaExtraPerInference": r["lambda"]["extraPerInference"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="natrelay-smart-pools-") as tmp, MotoProcess() as moto:
        r = run_phase(moto.endpoint, Path(tmp), args.quick)
    print(json.dumps({k: v for k, v in r.items() if not isinstance(v, dict)}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(r, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
