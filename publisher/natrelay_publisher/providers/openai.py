"""`openai`: any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, Ollama's /v1).

Each endpoint goes to the path of the same name under the base URL (`…/v1`):
`chat/completions`, `completions`, `embeddings`, `responses`, `messages`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from natrelay.wire import Endpoint
from natrelay_publisher.providers.base import BackendReply, HttpBackend
from natrelay_publisher.types import Chunk, JSONObject

__all__ = ["OpenAIProvider", "backend_path"]


def backend_path(endpoint: Endpoint) -> str:
    """The endpoint's path relative to an OpenAI-style base URL (which ends in /v1)."""
    return endpoint.path.removeprefix("/v1/")


class OpenAIProvider(HttpBackend):
    type_name: ClassVar[str] = "openai"
    models_path: ClassVar[str] = "models"
    not_found_hint: ClassVar[str] = (
        "an OpenAI-compatible baseUrl ends in /v1 (http://host:port/v1); for Ollama's native "
        "API use type: ollama"
    )
    # Servers that lack one answer 404 or 405: the client hears the model does not serve
    # it. List `endpoints` in the config to have the relay refuse those at once.
    endpoints: ClassVar[frozenset[Endpoint]] = frozenset(Endpoint)
    default_endpoints: ClassVar[frozenset[Endpoint]] = frozenset(Endpoint)

    async def models(self) -> list[str]:
        data = await self._listing()
        return [str(item["id"]) for item in data.get("data", []) if "id" in item]

    async def complete(self, request: JSONObject) -> BackendReply:
        return await self.send(Endpoint.CHAT, request)

    def stream(self, request: JSONObject) -> AsyncIterator[Chunk]:
        return self.send_stream(Endpoint.CHAT, request)

    async def send(self, endpoint: Endpoint, request: JSONObject) -> BackendReply:
        return await self._post(endpoint, backend_path(endpoint), request)

    def send_stream(self, endpoint: Endpoint, request: JSONObject) -> AsyncIterator[Chunk]:
        return self._post_stream(endpoint, backend_path(endpoint), request)
