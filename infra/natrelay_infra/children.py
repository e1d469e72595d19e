"""Child processes that do not outlive their parent (the demo publisher, moto, test servers)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the child SIGTERMed when we die, even by SIGKILL.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: start children
    from a thread that lives as long as they should.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # we died before the hook ran
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def stop_child(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout` s; False if it had to be killed."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True
