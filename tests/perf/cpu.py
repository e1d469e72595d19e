"""CPU seconds of the benchmark's processes (Linux /proc), to see where the cores went."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> Iterator[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return
    for task in tasks:
        try:
            yield from (int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue


def tree_seconds(pid: int) -> float:
    """CPU seconds of `pid` and of every child it has or had: its own time, its reaped
    children's (cutime/cstime) and the time of each live descendant, recursively."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # after the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS
    return total + sum(tree_seconds(child) for child in _children(pid))


def snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of process trees."""
    return {name: sum(tree_seconds(pid) for pid in pids) for name, pids in groups.items()}


def shares(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, dict[str, float]]:
    """Per group: CPU seconds between two snapshots, and the cores that is over `seconds`."""
    out = {}
    for name, end in after.items():
        used = max(0.0, end - before.get(name, 0.0))
        out[name] = {"cpuSeconds": round(used, 2), "cores": round(used / seconds, 2)}
    return out


def own_seconds() -> float:
    """CPU seconds of this process alone (all its threads, none of its children)."""
    times = os.times()
    return times.user + times.system
