"""What the pool benchmarks share: a relay whose pool has one publisher per backend
(`pool_stack`), and people holding multi-turn conversations with it, streamed, each turn's
time to first token measured (`conversations`). Used by tests.perf.smart_pools (a fake
prefix-cache backend) and tests.perf.llama_affinity (real llama.cpp servers)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.perf.prefix_backend import PrefixBackend
from tests.perf.procs import Stack
from tests.support.stack import CLIENT_TOKEN

SYSTEM = " ".join(f"rule{i}" for i in range(150))


@dataclass(frozen=True)
class Profile:
    conversations: int = 20
    turns: int = 8
    # Conversations going on at once, and a person's pause between two turns (seconds).
    workers: int = 10
    think: tuple[float, float] = (0.5, 1.5)
    overload_seconds: float = 30.0
    share_seconds: float = 20.0
    lambda_conversations: int = 8


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank), in ms; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 1)


def boxes_of(backend: str, boxes: list[str]) -> list[str]:
    """The OpenAI base URLs of the fake backend's boxes."""
    return [f"{backend}/box/{box}/v1" for box in boxes]


@contextmanager
def pool_stack(
    name: str,
    moto: str,
    logdir: Path,
    base_urls: list[str],
    *,
    model: str = "m",
    max_concurrency: int = 2,
    lambda_mode: bool = False,
    **settings: Any,
) -> Iterator[Stack]:
    """A relay whose pool `m` has one member (a publisher) per OpenAI base URL, each
    serving the backend's `model`."""
    members = [
        [
            {
                "name": "m",
                "type": "openai",
                "baseUrl": url,
                "model": model,
                "maxConcurrency": max_concurrency,
            }
        ]
        for url in base_urls
    ]
    stack = Stack.start(
        name,
        moto,
        logdir,
        members[0],
        lambda_mode=lambda_mode,
        members=len(base_urls),
        member_providers=members,
        heartbeat_timeout_seconds=60,
        **settings,
    )
    try:
        wait_members(stack, len(base_urls))
        yield stack
    finally:
        stack.stop()


def wait_members(stack: Stack, count: int) -> None:
    headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = httpx.get(f"{stack.client_api.url}/api/v1/llms/m", headers=headers, timeout=10)
        if view.status_code == 200 and len(view.json().get("members") or []) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{stack.name}: the pool never had {count} members")


# --- affinity --------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """What the conversations say: a system prompt all share, an opening message of
    `opening` words of their own, a message of `words` words each turn after; `body`:
    more fields of each request (max_tokens, temperature)."""

    system: str = SYSTEM
    opening: int = 40
    words: int = 40
    body: tuple[tuple[str, Any], ...] = ()


async def _turn(
    http: httpx.AsyncClient, url: str, messages: list[dict[str, Any]], script: Script
) -> tuple[float, str]:
    """Stream one turn: its time to first token, and its answer."""
    start = time.monotonic()
    ttft, text = None, []
    body = {"model": "m", "messages": messages, "stream": True, **dict(script.body)}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                ttft = ttft if ttft is not None else time.monotonic() - start
                text.append(delta)
    return (ttft if ttft is not None else time.monotonic() - start), "".join(text)


class IdleWatch:
    """How often a box of the pool sat idle while a request had waited in the relay more
    than 100 ms (sent, not yet at a box), sampled every 50 ms."""

    def __init__(self, backend: PrefixBackend, boxes: list[str]) -> None:
        self.backend, self.boxes = backend, boxes
        self.sent: list[float] = []
        self.waiting_samples = 0
        self.idle_samples = 0

    def send(self) -> None:
        self.sent.append(time.monotonic())

    async def run(self) -> None:
        start = self.backend.started
        while True:
            await asyncio.sleep(0.05)
            old = time.monotonic() - 0.1
            # requests reach the boxes about in the order they were sent
            waiting = sum(1 for t in self.sent if t < old) - (self.backend.started - start)
            if waiting > 0:
                self.waiting_samples += 1
                busy = self.backend.busy()
                self.idle_samples += any(busy.get(b, 0) == 0 for b in self.boxes)

    def figures(self) -> dict[str, float]:
        """For how long work waited in the relay, and for how long of that a box sat idle
        (a conversation waiting for its member, which was busy)."""
        return {
            "workWaitedSeconds": round(self.waiting_samples * 0.05, 2),
            "boxIdleWhileWorkWaitedSeconds": round(self.idle_samples * 0.05, 2),
        }


async def conversations(
    url: str,
    profile: Profile,
    watch: IdleWatch | None = None,
    seed: int = 7,
    script: Script = Script(),
) -> list[tuple[int, float]]:
    """`profile.conversations` conversations of `profile.turns` turns, `profile.workers`
    at a time, a pause of `profile.think` between turns; each turn's (number, time to
    first token)."""
    rng = random.Random(seed)
    todo = list(range(profile.conversations))
    out: list[tuple[int, float]] = []
    headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}

    def words(n: int) -> str:
        return " ".join(f"w{rng.randrange(10_000)}" for _ in range(n))

    async def worker(http: httpx.AsyncClient) -> None:
        while todo:
            n = todo.pop(0)
            messages = [
                {"role": "system", "content": script.system},
                {"role": "user", "content": f"conversation {n}: {words(script.opening)}"},
            ]
            for turn in range(profile.turns):
                if turn:
                    await asyncio.sleep(rng.uniform(*profile.think))
                if watch is not None:
                    watch.send()
                ttft, answer = await _turn(http, url, messages, script)
                out.append((turn, ttft))
                messages += [
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": words(script.words)},
                ]

    async with httpx.AsyncClient(headers=headers, timeout=300) as http:
        watcher = asyncio.create_task(watch.run()) if watch is not None else None
        try:
            await asyncio.gather(*(worker(http) for _ in range(profile.workers)))
        finally:
            if watcher is not None:
                watcher.cancel()
    return out


def ttft_figures(turns: list[tuple[int, float]], profile: Profile) -> dict[str, Any]:
    """Time to first token over all turns, and its median turn by turn."""
    ttfts = [t for _, t in turns]
    return {
        "turns": len(ttfts),
        "ttftP50Ms": pct(ttfts, 0.5),
        "ttftP95Ms": pct(ttfts, 0.95),
        "ttftMeanMs": round(1000 * sum(ttfts) / len(ttfts), 1) if ttfts else None,
        "ttftP50ByTurnMs": [
            pct([t for n, t in turns if n == k], 0.5) for k in range(profile.turns)
        ],
    }


def gain(out: dict[str, Any]) -> float | None:
    """1 - the affinity arm's TTFT p50 / today's."""
    old, new = out["today"]["ttftP50Ms"], out["affinity"]["ttftP50Ms"]
    return round(1 - new / old, 3) if old and new is not None else None


def pool_view(stack: Stack) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    view: dict[str, Any] = httpx.get(
        f"{stack.client_api.url}/api/v1/llms/m", headers=headers, timeout=30
    ).json()
    return view
