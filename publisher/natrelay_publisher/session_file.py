"""The sticky session id, kept in a small JSON file (mode 0600) between runs, and the
lock that keeps a second publisher process off the same file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from natrelay_publisher.errors import SessionFileBusyError
from natrelay_publisher.lockfile import LockBusyError, LockFile

logger = logging.getLogger("natrelay.publisher")


class SessionFile:
    """Remembers the session id per relay URL, so a restart takes its rows back.

    `lock()` makes the file this process's own until `unlock()` or its exit: two
    processes on one session would claim each other's tasks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(f"{path.name}.lock")
        self._lock = LockFile(self.lock_path)

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
        # A fresh name nobody could plant a link at (O_EXCL, 0600), then an atomic rename.
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"relayUrl": relay_url, "providerSessionId": session_id}, handle)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def lock(self) -> None:
        """Take the lock file next to the session file; SessionFileBusyError if another
        process holds it. Released by `unlock()` (which removes it) or when the process
        ends, however."""
        try:
            import fcntl  # noqa: F401, PLC0415 - POSIX only
        except ImportError:  # Windows: no flock; run without the guard rather than not at all
            logger.warning(
                "cannot lock %s on this platform: make sure no other publisher uses it",
                self.path,
            )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._lock.acquire(str(os.getpid()))
        except LockBusyError as exc:
            raise SessionFileBusyError(
                f"another publisher (pid {exc.holder}) is using the session file {self.path}: "
                "two publishers on one session would take each other's tasks; stop that "
                "one, or give this config its own relay.sessionFile"
            ) from None

    def unlock(self) -> None:
        self._lock.release()
