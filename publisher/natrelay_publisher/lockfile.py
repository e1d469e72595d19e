"""A lock file held with flock(2) for a process's lifetime, removed when released.

The kernel holds the lock, not the file: a process that dies (even by SIGKILL) releases
it, and a file it leaves behind is taken over by the next one. Removing the file on
release is safe because `acquire` checks that the file it locked is still the one at
the path (otherwise two processes could each lock a file of the same name).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class LockBusyError(Exception):
    """Another process holds the lock; `holder` is what it wrote in the file."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class LockFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Lock the file and write `holder` in it; LockBusyError if another process
        holds it. POSIX only (fcntl)."""
        import fcntl  # noqa: PLC0415 - POSIX only: callers on Windows do without

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held_by = os.read(fd, 200).decode("utf-8", "replace").strip()
                os.close(fd)
                raise LockBusyError(held_by or "unknown") from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if _same_file(self._fd, self.path):
                    os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return False
