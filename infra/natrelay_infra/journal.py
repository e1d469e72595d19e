"""The embedded moto's state on disk, so `natrelay dev` keeps it across restarts.

Every request that changed moto's state and succeeded — DynamoDB, Secrets Manager, SSM
parameters — is appended to a journal as it was sent. Replaying the journal in order
rebuilds the state exactly, conditional writes included: each request carries its own
condition values (`:now`), and the server applies one request at a time. A line reaches
the operating system before moto's answer leaves (a `kill -9` loses nothing answered);
the file is fsynced every second (a power cut loses at most that second).

Now and then — at start, and when the journal outgrows the state it describes — the
state is written out as a snapshot (tables with their items, secrets, parameters) and a
new journal begins. The items DynamoDB's TTL would have deleted by then are deleted
(moto never applies TTL), from the snapshot and from the running state alike, so the
state stays as small as DynamoDB's would be. Snapshot and
journal share a generation number; a snapshot is complete once renamed into place, so a
crash at any point leaves one consistent pair.

It records requests, not moto's objects: a state written by one moto version replays in
another.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from natrelay_infra.entries import Entry, WsgiApp, call, entry_of
from natrelay_infra.snapshot import snapshot_entries

log = logging.getLogger("natrelay.dev")

FORMAT = 1
SYNC_SECONDS = 1.0
# Compact when the journal passes this size and twice the snapshot's.
COMPACT_BYTES = 16 * 1024 * 1024


class Journal:
    """The state directory's snapshot and journal; `wrap` journals an app's requests."""

    def __init__(self, directory: Path, *, compact_bytes: int = COMPACT_BYTES) -> None:
        self.directory = directory
        self.compact_bytes = compact_bytes
        self._scopes: set[tuple[str, str, str]] = set()
        self._io = threading.Lock()
        self._fd: int | None = None
        self._dirty = False
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._generation = 0
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # --- start: replay, then compact ------------------------------------------------

    def restore(self, app: WsgiApp) -> int:
        """Replay the newest snapshot and its journal into `app`, write a fresh snapshot,
        and start journaling; returns how many requests were replayed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._generation = self._newest_generation()
        replayed = failed = 0
        for path in (self._snapshot(self._generation), self._journal(self._generation)):
            for entry in _entries(path):
                status, _ = call(app, entry)
                self._scopes.add((entry.access_key, entry.region, entry.service))
                replayed += 1
                failed += status >= 300
        if failed:
            log.warning("%d of %d saved requests did not replay in this moto", failed, replayed)
        self.compact(app)
        self._syncer = threading.Thread(target=self._sync_every_second, daemon=True)
        self._syncer.start()
        return replayed

    def _newest_generation(self) -> int:
        generations = [
            int(path.name.split(".")[1])
            for path in self.directory.glob("snapshot.*.jsonl")
            if path.name.split(".")[1].isdigit()
        ]
        return max(generations, default=0)

    def _snapshot(self, generation: int) -> Path:
        return self.directory / f"snapshot.{generation}.jsonl"

    def _journal(self, generation: int) -> Path:
        return self.directory / f"journal.{generation}.jsonl"

    # --- running ---------------------------------------------------------------------

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """`app`, journaling each request that changed kept state. Not thread-safe: run
        it inside the server's one lock (see moto_server.serialized)."""

        def journaled(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            entry = entry_of(environ)
            if entry is None:
                return list(app(environ, start_response))
            status: list[str] = []

            def capture(line: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(line)
                return start_response(line, headers, exc_info)

            body = list(app(environ, capture))
            if status and status[0].startswith("2"):
                self.append(entry)
                if self._journal_bytes > max(self.compact_bytes, 2 * self._snapshot_bytes):
                    self.compact(app)
            return body

        return journaled

    def append(self, entry: Entry) -> None:
        line = entry.line()
        self._scopes.add((entry.access_key, entry.region, entry.service))
        with self._io:
            assert self._fd is not None, "restore() first"
            os.write(self._fd, line)  # in the OS's hands: a killed process loses nothing
            self._journal_bytes += len(line)
            self._dirty = True

    def _sync_every_second(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            self.sync()

    def sync(self) -> None:
        with self._io:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        self.sync()
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # --- compaction ------------------------------------------------------------------

    def compact(self, app: WsgiApp) -> None:
        """Write the state as the next generation's snapshot; start its journal."""
        started = time.monotonic()
        generation = self._generation + 1
        final = self._snapshot(generation)
        temporary = final.with_suffix(".tmp")
        size = 0
        with _private(temporary) as out:
            for entry in snapshot_entries(app, sorted(self._scopes), now=time.time()):
                line = entry.line()
                out.write(line)
                size += len(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
        _sync_directory(self.directory)
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._fd = os.open(self._journal(generation), flags, 0o600)
            self._journal_bytes, self._snapshot_bytes = 0, size
            self._dirty = False
        for old in range(self._generation, generation):
            self._snapshot(old).unlink(missing_ok=True)
            self._journal(old).unlink(missing_ok=True)
        self._generation = generation
        log.debug("state snapshot: %d bytes in %.3f s", size, time.monotonic() - started)


def _entries(path: Path) -> Iterator[Entry]:
    """The entries of a file; a torn last line (a crash mid-write) ends it."""
    if not path.exists():
        return
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            try:
                yield Entry.parse(line)
            except (ValueError, KeyError):
                log.warning("%s: line %d is incomplete; replayed up to it", path.name, number)
                return


class _private:
    """A file only its owner may read (it holds secrets), opened for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
