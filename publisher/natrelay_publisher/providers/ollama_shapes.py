"""Translation between OpenAI shapes and Ollama's native /api/chat and /api/embed."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from typing import Any

from natrelay_publisher.errors import BackendFailedError
from natrelay_publisher.types import Chunk, JSONObject

# OpenAI sampling fields and their Ollama `options` names.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "stop": "stop",
}


def to_ollama(request: JSONObject, model: str, *, stream: bool) -> JSONObject:
    """An OpenAI chat-completions body as an Ollama /api/chat body."""
    body: JSONObject = {
        "model": model,
        "messages": [_message(m) for m in request.get("messages") or [] if isinstance(m, dict)],
        "stream": stream,
    }
    options = {
        name: request[field] for field, name in _OPTIONS.items() if request.get(field) is not None
    }
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    if options:
        body["options"] = options
    if request.get("tools"):
        body["tools"] = request["tools"]
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            body["format"] = "json"
        elif response_format.get("type") == "json_schema":
            body["format"] = (response_format.get("json_schema") or {}).get("schema", "json")
    return body


def _message(message: JSONObject) -> JSONObject:
    out: JSONObject = {"role": message.get("role", "user")}
    content = message.get("content")
    if isinstance(content, list):
        out["content"] = "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
        images = [
            _image(p) for p in content if isinstance(p, dict) and p.get("type") == "image_url"
        ]
        if images:
            out["images"] = [image for image in images if image]
    else:
        out["content"] = content or ""
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "function": {
                    "name": call["function"]["name"],
                    "arguments": _arguments(call["function"].get("arguments")),
                }
            }
            for call in message["tool_calls"]
        ]
    return out


def _image(part: JSONObject) -> str:
    url = part.get("image_url")
    url = url.get("url", "") if isinstance(url, dict) else str(url or "")
    # Ollama takes base64 only: strip the data-URL prefix.
    return url.partition("base64,")[2] if url.startswith("data:") else url


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return {}
    return raw or {}


def _tool_calls(message: JSONObject) -> list[JSONObject]:
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": call.get("function", {}).get("name", ""),
                "arguments": json.dumps(call.get("function", {}).get("arguments", {})),
            },
        }
        for call in message.get("tool_calls") or []
    ]


def usage(data: JSONObject) -> JSONObject:
    prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(data: JSONObject, tool_calls: bool) -> str:
    return "tool_calls" if tool_calls else str(data.get("done_reason") or "stop")


def completion(data: JSONObject, model: str) -> JSONObject:
    """An Ollama /api/chat answer as an OpenAI `chat.completion`."""
    message = data.get("message") or {}
    out: JSONObject = {"role": "assistant", "content": message.get("content", "")}
    calls = _tool_calls(message)
    if calls:
        out["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or model,
        "choices": [{"index": 0, "message": out, "finish_reason": _finish(data, bool(calls))}],
        "usage": usage(data),
    }


class ChunkTranslator:
    """Turns Ollama's NDJSON stream lines into OpenAI `chat.completion.chunk` objects."""

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self.head: JSONObject = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.include_usage = include_usage
        self._first = True
        self._tool_calls = False

    def chunks(self, data: JSONObject) -> list[Chunk]:
        message = data.get("message") or {}
        delta: JSONObject = {}
        if self._first:
            delta["role"] = "assistant"
            self._first = False
        if message.get("content"):
            delta["content"] = message["content"]
        calls = _tool_calls(message)
        if calls:
            self._tool_calls = True
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        out: list[Chunk] = []
        if delta or not data.get("done"):
            out.append(self._chunk(delta or {"content": ""}, None))
        if data.get("done"):
            out.append(self._chunk({}, _finish(data, self._tool_calls)))
            if self.include_usage:
                out.append({**self.head, "choices": [], "usage": usage(data)})
        return out

    def _chunk(self, delta: JSONObject, finish: str | None) -> Chunk:
        return {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


# --- embeddings: OpenAI /v1/embeddings <-> Ollama /api/embed ------------------------------


def embed_request(request: JSONObject, model: str) -> JSONObject:
    """An OpenAI embeddings body as an Ollama /api/embed body (text only: Ollama takes no
    token ids, BackendFailedError 400 for them)."""
    given = request.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BackendFailedError(
            "input: Ollama embeds text only (a string or a list of strings)", status=400
        )
    body: JSONObject = {"model": model, "input": given}
    if request.get("dimensions") is not None:
        body["dimensions"] = request["dimensions"]
    return body


def embeddings(data: JSONObject, request: JSONObject, model: str) -> JSONObject:
    """An Ollama /api/embed answer as an OpenAI embeddings list; base64 (little-endian
    float32, as OpenAI sends it) when the request asked for `encoding_format: base64`."""
    vectors = data.get("embeddings")
    if not isinstance(vectors, list):
        raise BackendFailedError("the backend answered /api/embed without `embeddings`")
    as_base64 = request.get("encoding_format") == "base64"
    prompt = int(data.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": _base64(vector) if as_base64 else vector,
            }
            for i, vector in enumerate(vectors)
        ],
        "model": data.get("model") or model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


def _base64(vector: Any) -> str:
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except (struct.error, TypeError) as exc:
        raise BackendFailedError(
            f"the backend answered an embedding that is not numbers: {exc}"
        ) from exc
    return base64.b64encode(packed).decode("ascii")
