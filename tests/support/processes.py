"""Child processes of the tests and the benchmark: relays, gateways, backends, LiteLLM.

Each child gets its own process group (a Ctrl-C reaches only the test run, which stops
them in order) and, on Linux, SIGTERM if the run dies without cleaning up. Start them
from a thread that lives as long as they should (natrelay_infra.children).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from natrelay_infra.children import die_with_parent, stop_child

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """One child process. Its output goes to `log` (appended to: a restart continues it),
    or, without one, to this process's own stdout and stderr, where pytest captures it."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        pipe: bool = False,
    ) -> None:
        """`pipe`: read stdout through `first_line` (only for children that print little)."""
        self.name, self.args, self.log = name, args, log
        self.env = dict(env or {})
        self.pipe = pipe
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        sink = self.log.open("ab") if self.log is not None else None
        try:
            return subprocess.Popen(
                self.args,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.pipe else sink,
                stderr=sink,
                process_group=0,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - an async-signal-safe prctl
            )
        finally:
            if sink is not None:
                sink.close()  # the child has its own copy

    def restart(self) -> None:
        """Start the same command again (after `kill` or `stop`)."""
        self.process = self._spawn()

    def first_line(self, timeout: float = 60.0) -> str:
        """The first line the child prints (e.g. its URL)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.process.stdout.fileno(), False)
        buffer = b""
        while b"\n" not in buffer:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} did not start (see {self.log})")
            chunk = self.process.stdout.read()
            if chunk:
                buffer += chunk
            else:
                time.sleep(0.02)
        return buffer.split(b"\n", 1)[0].decode().strip()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s."""
        stop_child(self.process, timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no draining, requests in flight cut."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def rss_kb(self) -> int:
        """Its resident memory (Linux), 0 if unknown."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "")
        return int(line.split()[1]) if line else 0

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None else ""
