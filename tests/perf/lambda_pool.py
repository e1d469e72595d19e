"""Lambda's one request per instance, on 127.0.0.1: API processes behind one address.

    python -m tests.perf.lambda_pool --port N --logdir DIR [--max-instances M]

The benchmark's stand-in for API Gateway's HTTP API and Lambda's scaling, in Lambda mode.
Each request goes to an idle instance — a counting API process (tests/perf/counting_api.py)
that the pool gives one request at a time — the most recently used first, as Lambda
reuses a warm instance. When none is idle the pool starts a new one on the spot, and the
request waits for it as a request waits for a cold Lambda's INIT: the instance's socket
is made here and listening before its process starts, so the request is taken the moment
the app is ready. Past `--max-instances`, requests wait for a free instance (counted:
Lambda would throttle them instead).

The pool stamps `x-bench-arrived` (when the request reached it) on what it forwards, and
serves:

* `GET /_pool/stats`: `instances`, every instance's `/_bench/stats` since the last reset
  (reaped instances keep theirs), and `pool`: instances started, requests that met a cold
  instance (by route kind), requests that waited for a free instance, the most instances
  alive and busy at once;
* `POST /_pool/reset`: reset every instance and the pool's counts;
* `POST /_pool/reap[?keep=N]`: stop every idle instance (but the N most recently used),
  as Lambda does after a quiet while.

The instances' settings are the pool's NATRELAY_* environment, as for one API process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn

from natrelay_infra.children import die_with_parent, stop_child
from tests.perf.counting_api import ARRIVED_HEADER, route_kind
from tests.support.net import listen

Scope = dict[str, Any]
# Hop-by-hop headers, and the host the instance sees as its own.
_DROP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host"})


@dataclass
class Instance:
    number: int
    process: subprocess.Popen[bytes]
    url: str


class Pool:
    """Instances, each serving one forwarded request at a time; started on demand."""

    def __init__(self, logdir: Path, max_instances: int) -> None:
        self.logdir = logdir
        self.max_instances = max_instances
        self.live: list[Instance] = []
        self.idle: list[Instance] = []
        self.busy = 0
        self._free = asyncio.Condition()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )
        self._numbers = 0
        self.reset_counts()

    def reset_counts(self) -> None:
        self.retired: list[dict[str, Any]] = []
        self.started = 0
        self.cold: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.waited = 0
        self.peak_live = len(self.live)
        self.peak_busy = self.busy

    def _start(self) -> Instance:
        """A new instance: its socket listens now; its process takes requests once ready."""
        self._numbers += 1
        sock = listen()
        sock.listen(64)
        port = sock.getsockname()[1]
        args = [sys.executable, "-m", "tests.perf.counting_api", "--fd", str(sock.fileno())]
        with (self.logdir / f"instance{self._numbers}.log").open("ab") as log:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(sock.fileno(),),
                process_group=0,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - an async-signal-safe prctl
            )
        sock.close()  # the child holds its own copy
        instance = Instance(self._numbers, process, f"http://127.0.0.1:{port}")
        self.live.append(instance)
        self.started += 1
        self.peak_live = max(self.peak_live, len(self.live))
        return instance

    async def acquire(self) -> tuple[Instance, bool]:
        """An idle instance (the most recently used), or a new one (True: cold)."""
        async with self._free:
            waited = False
            while True:
                while self.idle:
                    instance = self.idle.pop()
                    if instance.process.poll() is None:
                        self._busy(+1)
                        return instance, False
                    self.live.remove(instance)
                if len(self.live) < self.max_instances:
                    self._busy(+1)
                    return self._start(), True
                if not waited:
                    self.waited += 1
                    waited = True
                await self._free.wait()

    def _busy(self, delta: int) -> None:
        self.busy += delta
        self.peak_busy = max(self.peak_busy, self.busy)

    async def release(self, instance: Instance) -> None:
        async with self._free:
            self._busy(-1)
            if instance.process.poll() is None:
                self.idle.append(instance)
            elif instance in self.live:
                self.live.remove(instance)
            self._free.notify()

    async def forward(self, scope: Scope, receive: Any, send: Any) -> None:
        arrived = time.time()
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        kind = route_kind(scope["method"], scope["path"])
        instance, cold = await self.acquire()
        self.requests[kind] += 1
        if cold:
            self.cold[kind] += 1
        try:
            target = instance.url + scope["raw_path"].decode()
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode()
            headers = [(k, v) for k, v in scope["headers"] if k not in _DROP]
            headers.append((ARRIVED_HEADER, repr(arrived).encode()))
            request = self._client.build_request(
                scope["method"], target, headers=headers, content=bytes(body)
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                await _answer(send, 502, {"error": f"instance {instance.number}: {exc!r}"})
                return
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [
                            (k, v) for k, v in response.headers.raw if k.lower() not in _DROP
                        ],
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await response.aclose()
        finally:
            await self.release(instance)

    async def stats(self) -> dict[str, Any]:
        live = await asyncio.gather(*(self._get(i, "/_bench/stats") for i in self.live))
        return {
            "instances": [*self.retired, *(s for s in live if s is not None)],
            "pool": {
                "live": len(self.live),
                "started": self.started,
                "coldRequests": dict(self.cold),
                "requests": dict(self.requests),
                "waitedForInstance": self.waited,
                "peakLive": self.peak_live,
                "peakBusy": self.peak_busy,
            },
        }

    async def reset(self) -> None:
        await asyncio.gather(*(self._post(i, "/_bench/reset") for i in self.live))
        self.reset_counts()

    async def reap(self, keep: int = 0) -> int:
        """Stop the idle instances but the `keep` most recently used (their counts are
        kept); how many were stopped."""
        async with self._free:
            cut = max(0, len(self.idle) - keep)
            victims, self.idle = self.idle[:cut], self.idle[cut:]
            for instance in victims:
                self.live.remove(instance)
        kept = await asyncio.gather(*(self._get(i, "/_bench/stats") for i in victims))
        self.retired += [s for s in kept if s is not None]
        await asyncio.gather(*(asyncio.to_thread(stop_child, i.process, 10) for i in victims))
        return len(victims)

    async def close(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(stop_child, i.process, 10) for i in self.live))
        await self._client.aclose()

    async def _get(self, instance: Instance, path: str) -> dict[str, Any] | None:
        try:
            response = await self._client.get(instance.url + path, timeout=30)
            return dict(response.json())
        except (httpx.HTTPError, ValueError):
            return None  # an instance that died: its counts are lost (its log says why)

    async def _post(self, instance: Instance, path: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self._client.post(instance.url + path, timeout=30)


async def _answer(send: Any, status: int, payload: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class PoolApp:
    """ASGI: `/_pool/*` here, everything else forwarded to an instance."""

    def __init__(self, logdir: Path, max_instances: int) -> None:
        self.logdir = logdir
        self.max_instances = max_instances
        self.pool: Pool | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http" or self.pool is None:
            return
        pool = self.pool
        path = scope["path"]
        if path == "/_pool/stats":
            await _answer(send, 200, await pool.stats())
        elif path == "/_pool/reset" and scope["method"] == "POST":
            await pool.reset()
            await _answer(send, 200, {"reset": True})
        elif path == "/_pool/reap" and scope["method"] == "POST":
            keep = int(dict(parse_qsl(scope.get("query_string", b"").decode())).get("keep", 0))
            await _answer(send, 200, {"stopped": await pool.reap(keep)})
        else:
            await pool.forward(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = Pool(self.logdir, self.max_instances)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--logdir", type=Path, required=True)
    parser.add_argument("--max-instances", type=int, default=48)
    args = parser.parse_args()
    uvicorn.run(
        PoolApp(args.logdir, args.max_instances),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
