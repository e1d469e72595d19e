"""A fake backend with a prefix cache, for the smart-pools benchmark (tests.perf.smart_pools).

One server holds several "boxes", each its own backend at `/box/<name>/v1` with its own
cache and speed: `<name>` ends in `-<factor>` (`slow-3`: three times slower). A box runs
`slots` requests at once (the rest wait, as on a real server). Its time to first token
is PREFILL_SECONDS per prompt token it has not seen recently (the longest prefix shared
with one of its CACHED_PROMPTS last prompts is cached: llama.cpp's server keeps each of
its parallel slots' last prompt; here twice as many), then it sends `tokens` tokens,
TOKEN_SECONDS apart. Prompt tokens are words. The answer carries the box's own time
(`x_box`: seconds from the slot taken to the end, and the box's name) so a client can
tell its wait in the relay from the box's work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PREFILL_SECONDS = 0.003
BASE_SECONDS = 0.02
TOKEN_SECONDS = 0.01
# The prompts a box keeps cached (its last ones), and for how long.
CACHED_PROMPTS = 4
CACHE_SECONDS = 300.0


@dataclass
class Box:
    name: str
    factor: float
    slots: asyncio.Semaphore
    recent: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    busy: int = 0
    served: int = 0

    def uncached(self, prompt: tuple[str, ...]) -> int:
        """Tokens of `prompt` past its longest prefix shared with a recent prompt."""
        now = time.monotonic()
        self.recent = [(t, p) for t, p in self.recent if now - t < CACHE_SECONDS]
        best = 0
        for _, seen in self.recent:
            shared = 0
            for a, b in zip(seen, prompt, strict=False):
                if a != b:
                    break
                shared += 1
            best = max(best, shared)
        self.recent = [*self.recent[-(CACHED_PROMPTS - 1) :], (now, prompt)]
        return len(prompt) - best


def _words(body: dict[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            out += [f"{message.get('role')}:", *content.split()]
    return tuple(out)


class PrefixBackend:
    def __init__(self, slots: int = 2, tokens: int = 8) -> None:
        self.slots = slots
        self.tokens = tokens
        self.boxes: dict[str, Box] = {}
        self.started = 0  # requests that reached a box (taken a slot or waiting for one)

    def box(self, name: str) -> Box:
        if name not in self.boxes:
            factor = float(name.rpartition("-")[2]) if "-" in name else 1.0
            self.boxes[name] = Box(name, factor, asyncio.Semaphore(self.slots))
        return self.boxes[name]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/box/{box}/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/box/{box}/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        box = self.box(request.path_params["box"])
        body = await request.json()
        self.started += 1
        if body.get("stream"):
            return StreamingResponse(self._stream(box, body), media_type="text/event-stream")
        chunks = [c async for c in self._run(box, body)]
        took = chunks[-1]
        return JSONResponse(
            {
                "id": "fake",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": " ".join(chunks[:-1])},
                    }
                ],
                "usage": {"prompt_tokens": len(_words(body)), "completion_tokens": self.tokens},
                "x_box": {"name": box.name, "seconds": float(took)},
            }
        )

    async def _run(self, box: Box, body: dict[str, Any]) -> AsyncIterator[str]:
        """The tokens of the answer as the box makes them, then its time (seconds)."""
        async with box.slots:
            box.busy += 1
            start = time.monotonic()
            try:
                prompt = _words(body)
                await asyncio.sleep(
                    (BASE_SECONDS + PREFILL_SECONDS * box.uncached(prompt)) * box.factor
                )
                for i in range(self.tokens):
                    if i:
                        await asyncio.sleep(TOKEN_SECONDS * box.factor)
                    yield f"t{i}"
            finally:
                box.busy -= 1
                box.served += 1
            yield str(time.monotonic() - start)

    async def _stream(self, box: Box, body: dict[str, Any]) -> AsyncIterator[bytes]:
        async for token in self._run(box, body):
            if token.startswith("t"):
                chunk = {
                    "id": "fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": token + " "}}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
        stop = {"id": "fake", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        stop["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        yield f"data: {json.dumps(stop)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def busy(self) -> dict[str, int]:
        return {name: box.busy for name, box in self.boxes.items()}

    def served(self) -> dict[str, int]:
        return defaultdict(int, {name: box.served for name, box in self.boxes.items()})
