"""`openai`: any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, Ollama's /v1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, ClassVar

import httpx

from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.providers.base import (
    BackendReply,
    HttpBackend,
    broken_stream,
    closed_early,
    error_message,
    failed_status,
    forwarded,
    parse_json,
    unreachable,
)

if TYPE_CHECKING:
    from natrelay_publisher.types import Chunk, JSONObject


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined with newlines)."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class OpenAIProvider(HttpBackend):
    type_name: ClassVar[str] = "openai"
    models_path: ClassVar[str] = "models"

    async def models(self) -> list[str]:
        data = await self._listing()
        return [str(item["id"]) for item in data.get("data", []) if "id" in item]

    async def complete(self, request: JSONObject) -> BackendReply:
        body = forwarded(request, self.model, stream=False)
        response = await self._call("POST", "chat/completions", body)
        return BackendReply(response.status_code, parse_json(response))

    async def stream(self, request: JSONObject) -> AsyncIterator[Chunk]:
        body = forwarded(request, self.model, stream=True)
        started = False
        end = _StreamEnd()
        try:
            async with self._client.stream("POST", "chat/completions", json=body) as response:
                if not response.is_success:
                    raise failed_status(response, await response.aread())
                started = True
                async for data in sse_data(response.aiter_lines()):
                    if data.strip() == "[DONE]":
                        return
                    chunk = _chunk(data)
                    end.see(chunk)
                    yield chunk
        except httpx.HTTPError as exc:
            raise (broken_stream if started else unreachable)(self.name, exc, self.timeout) from exc
        if not end.proper:
            # A body that just stops is a backend that died or a proxy that cut it: the
            # client must not take the text so far for the whole answer.
            raise closed_early("no `data: [DONE]` and no finish_reason")


class _StreamEnd:
    """Whether a stream without `[DONE]` still ended properly: every choice finished."""

    def __init__(self) -> None:
        self.open: set[object] = set()
        self.done: set[object] = set()

    def see(self, chunk: Chunk) -> None:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if choice.get("finish_reason"):
                self.open.discard(index)
                self.done.add(index)
            elif index not in self.done:
                self.open.add(index)

    @property
    def proper(self) -> bool:
        return bool(self.done) and not self.open


def _chunk(data: str) -> Chunk:
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise BackendFailedError(f"the backend sent invalid JSON in its stream: {exc}") from exc
    if not isinstance(chunk, dict):
        raise BackendFailedError("the backend sent a stream event that is not an object")
    if "error" in chunk and "choices" not in chunk:
        raise BackendFailedError(error_message(502, data))
    return chunk
