"""The sticky session id, kept in a small JSON file (mode 0600) between runs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("natrelay.publisher")


class SessionFile:
    """Remembers the session id per relay URL, so a restart takes its rows back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, relay_url: str) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable session file %s: %s", self.path, exc)
            return None
        if not isinstance(data, dict) or data.get("relayUrl") != relay_url:
            return None
        session_id = data.get("providerSessionId")
        return session_id if isinstance(session_id, str) else None

    def save(self, relay_url: str, session_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"relayUrl": relay_url, "providerSessionId": session_id}, handle)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)
