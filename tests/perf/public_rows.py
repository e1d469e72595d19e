"""What a public row adds: a fake OpenAI upstream on 127.0.0.1 called directly, and
through the relay (uvicorn + moto) as a public row; and how long the console overview takes.

    .venv/bin/python -m tests.perf.public_rows [--n 200] [--out FILE]

Sequential requests on kept-alive connections; numbers in ms. On demand only (not a
test): a shared machine's numbers drift between runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from natrelay.wire import Paths
from natrelay_infra.moto_server import MotoServer
from tests.support.backend import FakeBackend
from tests.support.net import serve
from tests.support.stack import put_secret, running_stack

HI = [{"role": "user", "content": "hi"}]


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


def _timed(n: int, call: Callable[[], None]) -> dict[str, float]:
    for _ in range(max(5, n // 10)):  # warm up: connections, caches, the key's secret
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return _stats(samples)


def _plain(http: httpx.Client, url: str, model: str) -> Callable[[], None]:
    def call() -> None:
        http.post(url, json={"model": model, "messages": HI}).raise_for_status()

    return call


def _first_token(http: httpx.Client, url: str, model: str, out: list[float]) -> Callable[[], None]:
    def call() -> None:
        t0 = time.perf_counter()
        body = {"model": model, "messages": HI, "stream": True}
        with http.stream("POST", url, json=body) as resp:
            resp.raise_for_status()
            first = True
            for line in resp.iter_lines():
                if first and line.startswith("data: "):
                    out.append((time.perf_counter() - t0) * 1000)
                    first = False

    return call


def run(n: int) -> dict[str, Any]:
    key = f"sk-bench-{uuid.uuid4().hex}"
    backend = FakeBackend(api_key=key, interval=0.0)
    with MotoServer() as moto, serve(backend.app()) as upstream:
        secret = put_secret(moto.endpoint, "natrelay/bench", key)
        with running_stack(moto.endpoint, secrets_endpoint=moto.endpoint) as stack:
            admin = {"Authorization": f"Bearer {stack.admin_token}"}
            rows = [
                {
                    "name": "cloud" if i == 0 else f"cloud-{i}",
                    "kind": "public",
                    "baseUrl": f"{upstream}/v1",
                    "model": "m1",
                    "apiKey": {"secretsManager": secret},
                }
                for i in range(20)
            ]
            httpx.post(
                f"{stack.url}{Paths.LLMS_APPLY}", headers=admin, json={"documents": rows}
            ).raise_for_status()
            direct = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30)
            relay = httpx.Client(
                headers={"Authorization": f"Bearer {stack.client_token}"}, timeout=30
            )
            out: dict[str, Any] = {"n": n}
            out["plainDirect"] = _timed(n, _plain(direct, f"{upstream}/v1/chat/completions", "m1"))
            out["plainRelay"] = _timed(n, _plain(relay, f"{stack.url}{Paths.CHAT}", "cloud"))
            ttft_direct: list[float] = []
            ttft_relay: list[float] = []
            _timed(n, _first_token(direct, f"{upstream}/v1/chat/completions", "m1", ttft_direct))
            _timed(n, _first_token(relay, f"{stack.url}{Paths.CHAT}", "cloud", ttft_relay))
            out["ttftDirect"] = _stats(ttft_direct[-n:])
            out["ttftRelay"] = _stats(ttft_relay[-n:])
            out["addedPlainP50"] = round(out["plainRelay"]["p50"] - out["plainDirect"]["p50"], 2)
            out["addedTtftP50"] = round(out["ttftRelay"]["p50"] - out["ttftDirect"]["p50"], 2)
            page = httpx.Client(timeout=30)
            page.post(f"{stack.url}{Paths.CONSOLE_LOGIN}", data={"key": stack.admin_token})

            def status() -> None:
                page.get(f"{stack.url}{Paths.CONSOLE}").raise_for_status()

            out["statusPage20Rows"] = _timed(max(20, n // 10), status)
            for client in (direct, relay, page):
                client.close()
    return out


def measure(
    run_it: Callable[[int], dict[str, Any]], argv: list[str] | None, about: str, n: int
) -> int:
    """The command line of a measurement: `--n` requests, `--out FILE`; prints JSON."""
    parser = argparse.ArgumentParser(description=about)
    parser.add_argument("--n", type=int, default=n, help="requests per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run_it(args.n)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return measure(run, argv, __doc__.splitlines()[0], 200)


if __name__ == "__main__":
    sys.exit(main())
