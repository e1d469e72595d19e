"""The APIs the relay serves, and what it must understand of each request.

Everything else in a body passes through to the backend untouched. How each streams:
chat and completions as `data:` chunks ending in `data: [DONE]` (OpenAI's chat and
legacy completions streams); responses and messages as named events (`event: <type>`
before each `data:`, no `[DONE]`), as the Responses and Anthropic Messages APIs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from natrelay.wire import Endpoint


def _text_or_list(value: Any) -> Any:
    """A string, or a non-empty list (of strings, or token ids): what `prompt` and
    `input` take. One error naming the field, not one per member of a union."""
    if isinstance(value, str) or (isinstance(value, list) and value):
        return value
    raise PydanticCustomError(
        "text_or_list", "should be a string or a non-empty list (of strings or token ids)"
    )


TextOrList = Annotated[
    Any,
    PlainValidator(_text_or_list),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class ChatRequest(_Request):
    """What the relay must understand of a chat request; everything else passes through."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


class CompletionRequest(_Request):
    """A legacy completions request: a prompt (text, texts, or token ids)."""

    prompt: TextOrList
    stream: bool = False


class EmbeddingRequest(_Request):
    """An embeddings request: text, texts, or token ids; never streamed."""

    input: TextOrList


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
