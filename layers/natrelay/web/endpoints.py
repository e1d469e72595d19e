"""The APIs the relay serves, and what it must understand of each request.

Everything else in a body passes through to the backend untouched. How each streams:
chat and completions as `data:` chunks ending in `data: [DONE]` (OpenAI's chat and
legacy completions streams); responses and messages as named events (`event: <type>`
before each `data:`, no `[DONE]`), as the Responses and Anthropic Messages APIs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from natrelay.wire import Endpoint


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class ChatRequest(_Request):
    """What the relay must understand of a chat request; everything else passes through."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


class CompletionRequest(_Request):
    """A legacy completions request: a prompt (text, texts, or token ids)."""

    prompt: str | list[Any]
    stream: bool = False


class EmbeddingRequest(_Request):
    """An embeddings request: text, texts, or token ids; never streamed."""

    input: str | list[Any]


class ResponseRequest(_Request):
    """A Responses API request (stateless: `previous_response_id` passes through)."""

    stream: bool = False


class MessageRequest(_Request):
    """An Anthropic Messages API request."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


@dataclass(frozen=True)
class EndpointSpec:
    endpoint: Endpoint
    request: type[_Request]
    # Streams name their events (`event: <the data's type>`) and end without [DONE].
    named_events: bool = False


ENDPOINTS = {
    spec.endpoint: spec
    for spec in (
        EndpointSpec(Endpoint.CHAT, ChatRequest),
        EndpointSpec(Endpoint.COMPLETIONS, CompletionRequest),
        EndpointSpec(Endpoint.EMBEDDINGS, EmbeddingRequest),
        EndpointSpec(Endpoint.RESPONSES, ResponseRequest, named_events=True),
        EndpointSpec(Endpoint.MESSAGES, MessageRequest, named_events=True),
    )
}


def spec_of(endpoint: str) -> EndpointSpec:
    """The spec of a task's endpoint (chat for one this relay does not know)."""
    try:
        return ENDPOINTS[Endpoint(endpoint)]
    except ValueError:
        return ENDPOINTS[Endpoint.CHAT]
