"""Bounded load loops (count and time) against an OpenAI-compatible chat endpoint."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Target:
    """Where a client sends chat completions: `url` is the base URL with /v1."""

    name: str
    url: str
    token: str
    model: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Samples:
    """Latencies in seconds of the requests that succeeded, and what failed."""

    latencies: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    finished_at: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)

    def extend(self, other: Samples) -> None:
        self.latencies += other.latencies
        self.ttft += other.ttft
        self.errors.update(other.errors)
        self.wall += other.wall
        self.finished_at += other.finished_at
        self.started_at += other.started_at

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self, ttft: bool = False) -> dict[str, Any]:
        values = self.ttft if ttft else self.latencies
        out: dict[str, Any] = {
            "n": len(values),
            "errors": dict(self.errors),
            "wallSeconds": round(self.wall, 3),
            "throughput": round(self.ok / self.wall, 1) if self.wall else None,
        }
        out.update({f"p{q}": ms(percentile(values, q)) for q in (50, 95, 99)})
        out["mean"] = ms(sum(values) / len(values)) if values else None
        if ttft:
            out["totalP50"] = ms(percentile(self.latencies, 50))
        return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _body(target: Target, text: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": target.model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


async def one(
    client: httpx.AsyncClient, target: Target, text: str, *, stream: bool, tokens: int = 0
) -> tuple[float, float | None, str | None]:
    """(latency, time to first token or None, error or None) of one chat completion."""
    url = f"{target.url}/chat/completions"
    started = time.perf_counter()
    body = _body(target, text, stream)
    try:
        if not stream:
            response = await client.post(url, json=body, headers=target.headers)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return elapsed, None, f"HTTP {response.status_code}"
            content = response.json()["choices"][0]["message"]["content"]
            return elapsed, None, None if content == text else "wrong content"
        first: float | None = None
        seen = 0
        async with client.stream("POST", url, json=body, headers=target.headers) as response:
            if response.status_code != 200:
                await response.aread()
                return time.perf_counter() - started, None, f"HTTP {response.status_code}"
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        seen += 1
                        if first is None:
                            first = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if tokens and seen != tokens:
            return elapsed, first, f"{seen} of {tokens} tokens"
        return elapsed, first, None
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        return time.perf_counter() - started, None, type(exc).__name__


async def run_load(
    target: Target,
    *,
    concurrency: int,
    count: int,
    seconds: float,
    stream: bool = False,
    tokens: int = 0,
    tag: str = "load",
) -> Samples:
    """`count` requests by `concurrency` workers, stopping early after `seconds`."""
    samples = Samples()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(60.0, connect=10.0)
    issued = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            i = issued
            issued += 1
            began = time.time()
            latency, first, error = await one(
                client, target, f"{tag} {i}", stream=stream, tokens=tokens
            )
            if error:
                samples.errors[error] += 1
                continue
            samples.latencies.append(latency)
            samples.started_at.append(began)
            samples.finished_at.append(time.time())
            if first is not None:
                samples.ttft.append(first)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        samples.wall = time.perf_counter() - started
    return samples


async def isolated(
    target: Target, *, count: int, gap: tuple[float, float], seconds: float, seed: int
) -> Samples:
    """One request at a time after a random idle gap: what an idle relay sees."""
    rng = random.Random(seed)
    samples = Samples()
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        started = time.perf_counter()
        for i in range(count):
            pause = rng.uniform(*gap)
            if time.perf_counter() + pause > deadline:
                break
            await asyncio.sleep(pause)
            latency, _, error = await one(client, target, f"isolated {i}", stream=False)
            if error:
                samples.errors[error] += 1
                continue
            samples.latencies.append(latency)
            samples.finished_at.append(time.time())
        samples.wall = time.perf_counter() - started
    return samples
