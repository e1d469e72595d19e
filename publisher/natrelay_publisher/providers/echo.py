"""`echo`: no backend; answers with the last user message, verbatim (demos and tests).

Every endpoint: completions echo the prompt, responses the input, messages the last
user message; embeddings are deterministic vectors of each input's hash."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx
from pydantic import Field

from natrelay.wire import Endpoint
from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.providers import echo_shapes as shapes
from natrelay_publisher.providers.base import (
    AVAILABILITY_TIMEOUT_SECONDS,
    BackendReply,
    ProviderOptions,
)
from natrelay_publisher.types import Chunk, JSONObject, ProviderSettings

_PIECES = re.compile(r"\s*\S+|\s+$")


class EchoOptions(ProviderOptions):
    token_delay_ms: float = Field(default=0, ge=0, le=60_000)
    # When set, the echo backend is up only while GET of this URL answers 2xx.
    availability_url: str | None = Field(default=None, pattern=r"^https?://")


def words(text: str) -> list[str]:
    """Split into words that keep their leading whitespace: the pieces join back to `text`."""
    return _PIECES.findall(text)


class EchoProvider:
    type_name: ClassVar[str] = "echo"
    Options: ClassVar[type[ProviderOptions]] = EchoOptions
    requires: ClassVar[tuple[str, ...]] = ()
    endpoints: ClassVar[frozenset[Endpoint]] = frozenset(Endpoint)
    default_endpoints: ClassVar[frozenset[Endpoint]] = frozenset(Endpoint)

    def __init__(self, config: ProviderSettings) -> None:
        self.name = config.name
        self.model = config.model or "echo"
        self.options = EchoOptions.model_validate(config.options)

    async def available(self) -> bool:
        url = self.options.availability_url
        if url is None:
            return True
        try:
            async with httpx.AsyncClient(timeout=AVAILABILITY_TIMEOUT_SECONDS) as client:
                return (await client.get(url)).is_success
        except httpx.HTTPError:
            return False

    async def models(self) -> list[str]:
        return [self.model]

    async def send(self, endpoint: Endpoint, request: JSONObject) -> BackendReply:
        if endpoint is Endpoint.CHAT:
            return await self.complete(request)
        if endpoint is Endpoint.EMBEDDINGS:
            await self._answer(Endpoint.CHAT, {"messages": []})  # asleep: 503
            return BackendReply(200, shapes.embeddings(request, self.model))
        text, prompt = await self._answer(endpoint, request)
        if endpoint is Endpoint.COMPLETIONS:
            return BackendReply(200, shapes.completion(text, prompt, self.model))
        if endpoint is Endpoint.RESPONSES:
            return BackendReply(200, shapes.response(text, prompt, self.model))
        return BackendReply(200, shapes.message(text, prompt, self.model))

    async def send_stream(self, endpoint: Endpoint, request: JSONObject) -> AsyncIterator[Chunk]:
        if endpoint is Endpoint.CHAT:
            async for chunk in self.stream(request):
                yield chunk
            return
        text, prompt = await self._answer(endpoint, request)
        pieces = words(text)
        if endpoint is Endpoint.COMPLETIONS:
            events = [shapes.completion(p, prompt, self.model, chunk=True) for p in pieces]
            events.append(shapes.completion("", prompt, self.model))
        elif endpoint is Endpoint.RESPONSES:
            events = shapes.response_events(pieces, prompt, self.model)
        elif endpoint is Endpoint.MESSAGES:
            events = shapes.message_events(pieces, prompt, self.model)
        else:
            raise BackendFailedError(f"{endpoint.path} does not stream", status=400)
        delay = self.options.token_delay_ms / 1000
        for i, event in enumerate(events):
            if delay and i:
                await asyncio.sleep(delay)
            yield event

    async def complete(self, request: JSONObject) -> BackendReply:
        text, prompt = await self._answer(Endpoint.CHAT, request)
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, text),
        }
        return BackendReply(200, body)

    async def stream(self, request: JSONObject) -> AsyncIterator[Chunk]:
        text, prompt = await self._answer(Endpoint.CHAT, request)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }

        def chunk(delta: JSONObject, finish: str | None = None) -> Chunk:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        delay = self.options.token_delay_ms / 1000
        for piece in words(text):
            if delay:
                await asyncio.sleep(delay)
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        stream_options = request.get("stream_options") or {}
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            yield {**head, "choices": [], "usage": _usage(prompt, text)}

    async def aclose(self) -> None:
        return None

    async def _answer(self, endpoint: Endpoint, request: JSONObject) -> tuple[str, str]:
        if not await self.available():
            raise BackendFailedError(
                f"the echo backend is asleep ({self.options.availability_url} is not answering)",
                status=503,
            )
        return shapes.echoed(endpoint, request)


def _usage(prompt: str, text: str) -> JSONObject:
    prompt_tokens, completion_tokens = len(prompt.split()), len(text.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
