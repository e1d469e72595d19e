"""`ollama`: Ollama's native API (/api/chat with NDJSON streaming, /api/embed, /api/tags);
completions, responses and messages through its OpenAI- and Anthropic-compatible /v1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx

from natrelay.wire import Endpoint
from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.providers.base import (
    BackendReply,
    HttpBackend,
    broken_stream,
    closed_early,
    error_message,
    failed_status,
    parse_json,
    unreachable,
)
from natrelay_publisher.providers.ollama_shapes import (
    ChunkTranslator,
    completion,
    embed_request,
    embeddings,
    to_ollama,
)
from natrelay_publisher.providers.openai import backend_path
from natrelay_publisher.types import Chunk, JSONObject


class OllamaProvider(HttpBackend):
    type_name: ClassVar[str] = "ollama"
    models_path: ClassVar[str] = "api/tags"
    not_found_hint: ClassVar[str] = (
        "not Ollama's native API (baseUrl without /v1, e.g. http://127.0.0.1:11434); an "
        "OpenAI-compatible server takes type: openai"
    )
    endpoints: ClassVar[frozenset[Endpoint]] = frozenset(Endpoint)
    # Responses (Ollama 0.13.3) and messages (later still) are newer: list them to publish them.
    default_endpoints: ClassVar[frozenset[Endpoint]] = frozenset(
        {Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS}
    )

    async def send(self, endpoint: Endpoint, request: JSONObject) -> BackendReply:
        if endpoint is Endpoint.CHAT:
            return await self.complete(request)
        if endpoint is Endpoint.EMBEDDINGS:
            body = embed_request(request, self.model)
            response = await self._call("POST", "api/embed", body, endpoint)
            data = parse_json(response)
            if not isinstance(data, dict) or "error" in data:
                raise BackendFailedError(error_message(502, response.content))
            return BackendReply(200, embeddings(data, request, self.model))
        return await self._post(endpoint, f"v1/{backend_path(endpoint)}", request)

    def send_stream(self, endpoint: Endpoint, request: JSONObject) -> AsyncIterator[Chunk]:
        if endpoint is Endpoint.CHAT:
            return self.stream(request)
        return self._post_stream(endpoint, f"v1/{backend_path(endpoint)}", request)

    async def models(self) -> list[str]:
        data = await self._listing()
        return [str(m["name"]) for m in data.get("models", []) if "name" in m]

    async def complete(self, request: JSONObject) -> BackendReply:
        body = to_ollama(request, self.model, stream=False)
        response = await self._call("POST", "api/chat", body)
        data = parse_json(response)
        if not isinstance(data, dict) or "error" in data:
            raise BackendFailedError(error_message(502, response.content))
        return BackendReply(200, completion(data, self.model))

    async def stream(self, request: JSONObject) -> AsyncIterator[Chunk]:
        body = to_ollama(request, self.model, stream=True)
        stream_options = request.get("stream_options")
        translator = ChunkTranslator(
            self.model,
            include_usage=isinstance(stream_options, dict)
            and bool(stream_options.get("include_usage")),
        )
        started = False
        try:
            async with self._client.stream("POST", "api/chat", json=body) as response:
                if not response.is_success:
                    raise failed_status(response, await response.aread())
                started = True
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    data = _line(line)
                    for chunk in translator.chunks(data):
                        yield chunk
                    if data.get("done"):
                        return
        except httpx.HTTPError as exc:
            raise (broken_stream if started else unreachable)(self.name, exc, self.timeout) from exc
        raise closed_early('no line with "done": true')


def _line(line: str) -> JSONObject:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BackendFailedError(f"the backend sent invalid JSON in its stream: {exc}") from exc
    if not isinstance(data, dict):
        raise BackendFailedError("the backend sent a stream line that is not an object")
    if "error" in data:
        raise BackendFailedError(error_message(502, line))
    return data
