"""Bodies as the relay stores them, and their size limits."""

from __future__ import annotations

import json
from typing import Any

from natrelay.errors import PayloadTooLargeError

MAX_CHUNK_BATCH_BYTES = 350 * 1024
# A poll answer inlines requests up to this total; larger ones are fetched separately.
POLL_INLINE_BUDGET = 1024 * 1024


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def check_size(data: bytes, limit: int, message: str, param: str | None = None) -> None:
    """PayloadTooLargeError with `message` (formatted with size and limit) past `limit`."""
    if len(data) > limit:
        raise PayloadTooLargeError(message.format(size=len(data), limit=limit), param=param)
