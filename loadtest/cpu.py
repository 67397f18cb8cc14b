"""CPU time spent by the processes under test, for work-per-request figures.

On a shared, noisy machine a request rate moves with the neighbours; the CPU time a
server spends per request moves much less, so the benchmark prints both. Read from
Linux's /proc; elsewhere there is no figure (None), never a wrong one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PROC = Path("/proc")


def tree_cpu_s(roots: Iterable[int]) -> float | None:
    """User plus system CPU seconds used so far by `roots` and their live descendants."""
    if not PROC.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    parent_of: dict[int, int] = {}
    used_s: dict[int, float] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name (in parentheses) may hold spaces: fields count from its end.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent_of[pid] = int(fields[1])
        used_s[pid] = (int(fields[11]) + int(fields[12])) / ticks
    tree = {pid for pid in roots if pid in used_s}
    grew = True
    while grew:
        children = {pid for pid, parent in parent_of.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(used_s[pid] for pid in tree)


@dataclass
class CpuMeter:
    """The CPU seconds some processes (with their children) spend in measured sections."""

    roots: tuple[int, ...]
    spent_s: float = 0.0
    known: bool = True

    def measure(self, work: Callable[[], T]) -> T:
        before = tree_cpu_s(self.roots)
        result = work()
        after = tree_cpu_s(self.roots)
        if before is None or after is None:
            self.known = False
        else:
            self.spent_s += after - before
        return result

    def per_request_us(self, requests: int) -> float | None:
        """Microseconds of CPU per request over every measured section."""
        if not self.known or not requests:
            return None
        return self.spent_s / requests * 1e6
