"""Secrets out of text the relay passes on: the one place that replaces them.

Whatever reaches a client or a log from an upstream (its error text, every event of its
stream) is redacted *before* anything cuts or parses it, so a secret that straddles a cut
can never survive in part.
"""

from __future__ import annotations

REDACTED = "[redacted]"


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each secret replaced by `[redacted]`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes, *secrets: str | None) -> bytes:
    """`data` (UTF-8) with every occurrence of each secret replaced by `[redacted]`."""
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), REDACTED.encode())
    return data
