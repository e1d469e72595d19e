"""Bodies as the relay stores them, and their size limits."""

from __future__ import annotations

import json
from typing import Any

from natrelay.errors import PayloadTooLargeError

MAX_CHUNK_BATCH_BYTES = 350 * 1024
# A poll answer inlines requests up to this total; larger ones are fetched separately.
POLL_INLINE_BUDGET = 1024 * 1024
# Error text from a backend or publisher is kept up to this many characters per field.
MAX_ERROR_TEXT = 8 * 1024


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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
