"""Bodies as the relay stores them, and their size limits."""

from __future__ import annotations

import json
import math
from typing import Any

from natrelay.errors import InvalidRequestError, PayloadTooLargeError

MAX_CHUNK_BATCH_BYTES = 350 * 1024
# A poll answer inlines requests up to this total; larger ones are fetched separately.
POLL_INLINE_BUDGET = 1024 * 1024
# Error text from a backend or publisher is kept up to this many characters per field.
MAX_ERROR_TEXT = 8 * 1024


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; InvalidRequestError for text UTF-8 cannot carry (a lone
    surrogate, which JSON's `\\ud800` escapes can express)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"the body holds text UTF-8 cannot carry (a lone surrogate): {exc.reason}"
        ) from exc


def check_size(data: bytes, limit: int, message: str, param: str | None = None) -> None:
    """PayloadTooLargeError with `message` (formatted with size and limit) past `limit`."""
    if len(data) > limit:
        raise PayloadTooLargeError(message.format(size=len(data), limit=limit), param=param)


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text`, cut to `limit` characters with a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [truncated: {len(text)} characters in all]"


def clipped_error(error: dict[str, Any]) -> dict[str, Any]:
    """An error as a publisher posted it, each text field cut to a storable size."""
    return {k: clip(v) if isinstance(v, str) else v for k, v in error.items()}


def _nothing(_: str) -> None:
    return None


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads_stored(raw: bytes) -> Any:
    """A stored answer as JSON can carry it: NaN and ±Infinity (which an older relay
    let through) read as null, as JSON.stringify writes them."""
    return json.loads(raw, parse_constant=_nothing, parse_float=_finite)


# Stream events that carry the answer's object one level down: the Responses API's
# `response.*` events, the Messages API's `message_start`.
_NESTED = ("response", "message")


def public_model(answer: Any, name: str) -> Any:
    """An answer or stream event naming the relay's model `name`, not the backend's
    model id (which may be a local path)."""
    if not isinstance(answer, dict):
        return answer
    if "model" in answer:
        answer = {**answer, "model": name}
    for key in _NESTED:
        inner = answer.get(key)
        if isinstance(inner, dict) and "model" in inner:
            answer = {**answer, key: {**inner, "model": name}}
    return answer
