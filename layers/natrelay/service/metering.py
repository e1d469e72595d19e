"""What a request may cost and what it did cost, in tokens, when nobody says or a
publisher says too much: the one home of those rules.

* Every relayed stream asks for its usage (`ask_usage`): chat and completions streams get
  `stream_options.include_usage`; the clients that did not ask never see the usage
  event (`without_usage`). The Responses and Messages APIs stream theirs anyway.
* A key with a token budget reserves an estimate when a request is admitted
  (`reservation`: the prompt's size, and its `max_tokens` or DEFAULT_COMPLETION_TOKENS),
  settled with the real count when it ends.
* A publisher's report is bounded (`bounded`): prompt tokens by what the prompt's size
  allows, completion tokens by the request's `max_tokens` (times `n`), or by what was
  relayed when it set none. A publisher that sends no usage, or a stream cut midway, is
  counted from what was relayed (`estimated`): about four bytes of text a token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from natrelay.wire import Endpoint

# The APIs whose streams carry usage only when asked (stream_options.include_usage).
USAGE_ON_REQUEST = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS})
# Completion tokens reserved for a request that sets no max_tokens.
DEFAULT_COMPLETION_TOKENS = 1024
# About this many bytes of text a token, for estimates.
BYTES_PER_TOKEN = 4
# A prompt may use up to one token per byte of its request, plus this (a chat template's
# tokens), plus IMAGE_TOKENS per image or audio part (their tokens are not in the bytes of
# a URL).
PROMPT_SLACK = 256
IMAGE_TOKENS = 16_384
COMPLETION_SLACK = 64
_MEDIA = (b'"type":"image', b'"type":"input_image', b'"type":"input_audio')
# The fields that cap a request's completion, by API.
_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Fields of answers and stream events that are not text the model produced.
_NOT_TEXT = frozenset(
    {"id", "object", "model", "created", "system_fingerprint", "role", "finish_reason",
     "type", "index", "usage", "logprobs", "status", "stop_reason", "service_tier"}
)  # fmt: skip


def client_asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def ask_usage(body: dict[str, Any], endpoint: Endpoint, stream: bool) -> dict[str, Any]:
    """The request as relayed: a chat or completions stream asks for its usage."""
    if not stream or endpoint not in USAGE_ON_REQUEST or client_asked_usage(body):
        return body
    options = body.get("stream_options")
    extra = options if isinstance(options, dict) else {}
    return {**body, "stream_options": {**extra, "include_usage": True}}


def usage_hidden(endpoint: str, body: dict[str, Any]) -> bool:
    """Whether a client's stream must not show the usage event: the relay asked for it,
    the client did not."""
    return endpoint in USAGE_ON_REQUEST and not client_asked_usage(body)


def without_usage(event: Any) -> Any | None:
    """A stream event as a client that did not ask for usage sees it: None for the usage
    event `include_usage` adds (no choices), and without the `"usage": null` it adds to
    the others. A usage a backend sends on its own, beside choices, stays."""
    if not isinstance(event, dict) or "usage" not in event:
        return event
    if not event.get("choices"):
        return None
    if event["usage"] is None:
        return {k: v for k, v in event.items() if k != "usage"}
    return event


def text_bytes(answer: Any) -> int:
    """UTF-8 bytes of the text in an answer or stream events (content, reasoning, tool
    call arguments), not of ids, names of fields or other metadata."""
    if isinstance(answer, str):
        return len(answer.encode("utf-8", "replace"))
    if isinstance(answer, dict):
        return sum(text_bytes(v) for k, v in answer.items() if k not in _NOT_TEXT)
    if isinstance(answer, list):
        return sum(text_bytes(v) for v in answer)
    return 0


def reported(body: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens from an answer's `usage`, if it has one: OpenAI's
    `prompt_tokens`/`completion_tokens`, or the Responses and Messages APIs'
    `input_tokens`/`output_tokens`."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None

    def count(name: str, other: str) -> int:
        value = usage.get(name, usage.get(other))
        return value if isinstance(value, int) and 0 <= value < 2**40 else 0

    return count("prompt_tokens", "input_tokens"), count("completion_tokens", "output_tokens")


@dataclass(frozen=True)
class Request:
    """What the rules need of a request: its size, media parts, completion cap."""

    size: int
    media: int = 0
    completion_cap: int | None = None

    @classmethod
    def of(cls, raw: bytes | None, size: int | None = None) -> Request:
        """From the request's bytes (None: too large to be at hand; its size only)."""
        if raw is None:
            return cls(size or 0)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        media = sum(raw.count(tag) for tag in _MEDIA)
        return cls(len(raw), media, _completion_cap(body))

    def estimated_prompt(self) -> int:
        return -(-self.size // BYTES_PER_TOKEN)

    def prompt_bound(self) -> int:
        return self.size + PROMPT_SLACK + IMAGE_TOKENS * self.media

    def reservation(self) -> int:
        completion = self.completion_cap or DEFAULT_COMPLETION_TOKENS
        return self.estimated_prompt() + completion


def _completion_cap(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    caps = [body.get(f) for f in _CAPS]
    cap = next((c for c in caps if isinstance(c, int) and not isinstance(c, bool) and c > 0), None)
    if cap is None:
        return None
    n = body.get("n")
    return cap * (n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1)


def reservation(body: dict[str, Any], size: int) -> int:
    """Tokens to reserve for a request of `size` bytes (its body parsed)."""
    return Request(size, completion_cap=_completion_cap(body)).reservation()


def estimated(request: Request, relayed: int) -> tuple[int, int]:
    """(prompt, completion) when nobody reported usage: nothing if nothing was relayed."""
    if relayed <= 0:
        return 0, 0
    return request.estimated_prompt(), -(-relayed // BYTES_PER_TOKEN)


def bounded(report: tuple[int, int], request: Request, relayed: int) -> tuple[int, int]:
    """A publisher's report, at most what the request allows: its prompt's size, its
    completion cap (else what was relayed: a token is at least a byte)."""
    prompt, completion = report
    cap = request.completion_cap
    most = cap if cap is not None else relayed + COMPLETION_SLACK
    return min(prompt, request.prompt_bound()), min(completion, most)


def counted(body: Any, request: Request, relayed: int, *, trusted: bool) -> tuple[int, int]:
    """The tokens to count: the report (bounded unless `trusted`: a public row's upstream,
    which the relay itself called), or an estimate from what was relayed."""
    report = reported(body)
    if report is None:
        return estimated(request, relayed)
    return report if trusted else bounded(report, request, relayed)


def relayed_in(events: Iterable[Any]) -> int:
    """Bytes of text in stream events."""
    return sum(text_bytes(e) for e in events)
