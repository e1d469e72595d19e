"""The echo provider's answers for the endpoints beyond chat: what it echoes from each
request, and the answer and stream events each API would send."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from typing import Any

from natrelay.wire import Endpoint
from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.types import Chunk, JSONObject

DEFAULT_DIMENSIONS = 8


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list (`text`,
    and the Responses API's `input_text` / `output_text`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
        )
    return ""


def _last_user(messages: Any) -> tuple[str, str]:
    if not isinstance(messages, list):
        raise BackendFailedError("messages must be a list", status=400)
    items = [m for m in messages if isinstance(m, dict)]
    users = [text_of(m.get("content")) for m in items if m.get("role", "user") == "user"]
    return (users[-1] if users else ""), " ".join(text_of(m.get("content")) for m in items)


def echoed(endpoint: Endpoint, request: JSONObject) -> tuple[str, str]:
    """(the answer, the whole prompt) of a request: the last user message, or the prompt
    or input itself."""
    if endpoint in (Endpoint.CHAT, Endpoint.MESSAGES):
        return _last_user(request.get("messages"))
    given = request.get("prompt" if endpoint is Endpoint.COMPLETIONS else "input")
    if isinstance(given, list) and given and all(isinstance(g, str) for g in given):
        given = given[0]
    if isinstance(given, str):
        return given, given
    if endpoint is Endpoint.RESPONSES:
        return _last_user(given)
    return "", ""


def _count(text: str) -> int:
    return len(text.split())


# --- completions -----------------------------------------------------------------------


def completion(text: str, prompt: str, model: str, *, chunk: bool = False) -> JSONObject:
    choice: JSONObject = {"index": 0, "text": text, "logprobs": None}
    choice["finish_reason"] = None if chunk else "stop"
    answer: JSONObject = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    if not chunk:
        answer["usage"] = {
            "prompt_tokens": _count(prompt),
            "completion_tokens": _count(text),
            "total_tokens": _count(prompt) + _count(text),
        }
    return answer


# --- embeddings ------------------------------------------------------------------------


def _vector(text: str, dimensions: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (dimensions // len(seed) + 1))[:dimensions]
    return [round(b / 255 - 0.5, 4) for b in raw]


def embeddings(request: JSONObject, model: str) -> JSONObject:
    """A deterministic vector per input text (its SHA-256, scaled), as OpenAI answers:
    floats, or base64 of little-endian float32 for `encoding_format: base64`."""
    given = request.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        raise BackendFailedError("input must be a string or a list", status=400)
    dims = request.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise BackendFailedError("dimensions must be an integer from 1 to 4096", status=400)
    data = []
    for i, text in enumerate(texts):
        vector = _vector(str(text), dims)
        value: Any = vector
        if request.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(_count(str(t)) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --- responses -------------------------------------------------------------------------


def message_item(status: str, text: str = "") -> JSONObject:
    return {
        "id": "msg_echo",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def response(text: str, prompt: str, model: str, status: str = "completed") -> JSONObject:
    done = status == "completed"
    item = message_item("completed", text)
    answer: JSONObject = {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "model": model,
        "output": [item] if done else [],
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
    }
    if done:
        answer["usage"] = {
            "input_tokens": _count(prompt),
            "output_tokens": _count(text),
            "total_tokens": _count(prompt) + _count(text),
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return answer


def response_events(pieces: list[str], prompt: str, model: str) -> list[Chunk]:
    """The Responses API's stream of an answer in `pieces` (each event's data)."""
    text = "".join(pieces)
    head = response("", prompt, model, status="in_progress")
    final = {**response(text, prompt, model), "id": head["id"]}
    at = {"item_id": "msg_echo", "output_index": 0, "content_index": 0}
    events: list[Chunk] = [
        {"type": "response.created", "response": head},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {
                "id": "msg_echo",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
        *({"type": "response.output_text.delta", **at, "delta": p, "logprobs": []} for p in pieces),
        {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": "response.completed", "response": final},
    ]
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


# --- Anthropic messages ----------------------------------------------------------------


def message(text: str, prompt: str, model: str) -> JSONObject:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": _count(prompt), "output_tokens": _count(text)},
    }


def message_events(pieces: list[str], prompt: str, model: str) -> list[Chunk]:
    """The Messages API's stream of an answer in `pieces` (each event's data)."""
    start = message("", prompt, model)
    start.update(content=[], stop_reason=None)
    start["usage"] = {"input_tokens": _count(prompt), "output_tokens": 0}
    return [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": _count("".join(pieces))},
        },
        {"type": "message_stop"},
    ]
