"""Stopping a foreground command on Ctrl-C or SIGTERM, and at once on a second one."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class StopOnSignal:
    """SIGINT/SIGTERM set `stopping`; a repeated signal calls `on_repeat` (e.g. kill a child)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.signum: int | None = None
        self.on_repeat: Callable[[], None] | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            if self.on_repeat is not None:
                self.on_repeat()
            return
        self.signum = signum
        self.stopping.set()

    def __enter__(self) -> StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
