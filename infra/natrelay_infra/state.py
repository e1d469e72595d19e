"""Where `natrelay dev` keeps its state between runs.

One directory (mode 0700: it holds keys' hashes, secrets and tokens): `moto/` the
embedded DynamoDB's and Secrets Manager's journal (natrelay_infra.journal), `demo/` the
demo publisher's config and session file (so a restarted demo takes its models back),
`tokens.json` the tokens it generated (so publishers configured with them keep working),
and `lock`, held while a relay runs on it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from natrelay_infra.journal import Journal
from natrelay_publisher.lockfile import LockBusyError, LockFile

STATE_DIR_ENV = "NATRELAY_STATE_DIR"


def default_state_dir() -> Path:
    """$NATRELAY_STATE_DIR, else natrelay/dev under $XDG_STATE_HOME (~/.local/state)."""
    given = os.environ.get(STATE_DIR_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "natrelay" / "dev"


class StateBusyError(Exception):
    """Another process runs on this state directory."""


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().absolute()

    def journal(self) -> Journal:
        return Journal(self.path / "moto")

    @property
    def demo(self) -> Path:
        path = self.path / "demo"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def tokens(self, wanted: dict[str, str | None], make: Callable[[], str]) -> dict[str, str]:
        """The tokens: those given, else the ones generated on an earlier run, else new
        ones (remembered for the next run)."""
        path = self.path / "tokens.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        tokens = {role: given or str(saved.get(role) or make()) for role, given in wanted.items()}
        generated = {role: tokens[role] for role, given in wanted.items() if not given}
        if generated != {role: saved.get(role) for role in generated}:
            _write_private(path, json.dumps({**saved, **generated}, indent=2) + "\n")
        return tokens


@contextlib.contextmanager
def locked_state(path: Path) -> Iterator[StateDir]:
    """The state directory, created if need be, held for this process (StateBusyError if
    another one holds it). Its `lock` file names the holder; it is removed on the way out,
    and one left by a killed process is taken over (the lock is the kernel's, not the
    file's)."""
    state = StateDir(path)
    state.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.path.chmod(0o700)
    lock = state.path / "lock"
    with _held(lock):
        yield state


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    lock = LockFile(path)
    try:
        lock.acquire(f"natrelay dev (pid {os.getpid()})")
    except LockBusyError as exc:
        raise StateBusyError(
            f"{path.parent} is in use by {exc.holder}: stop it, or pass --state-dir DIR "
            "(or --ephemeral)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)
