"""How many CPUs this process may use: the default number of workers and render threads.

`os.cpu_count()` counts the host's CPUs. In a container limited to two CPUs on a
64-core host it would start 64 workers, each throttled and holding its own memory. The
usable count is the CPUs this process may run on (its affinity: cpusets, `taskset`),
capped by the CPU quota of its control group and every group above it (cgroup v2
`cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded down: a worker on a
fraction of a CPU would be throttled mid-request, which is worse for the tail latency
than leaving the fraction unused. Never less than one.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@functools.cache
def usable_cpus() -> int:
    """The CPUs this process may use (computed once: neither changes while it runs)."""
    return count_usable_cpus(CGROUP_ROOT, PROC_SELF_CGROUP)


def count_usable_cpus(cgroup_root: Path, self_cgroup: Path) -> int:
    """`usable_cpus` with the control-group files read from the given places."""
    available = _affinity()
    quota = cpu_quota(cgroup_root, self_cgroup)
    if quota is None:
        return available
    return max(1, min(available, math.floor(quota)))


def cpu_quota(cgroup_root: Path, self_cgroup: Path) -> float | None:
    """The CPU limit of this process's control group, in CPUs; None for none (or none
    that can be read: then there is nothing to respect)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            quota = _v2_quota(cgroup_root, path)
        elif "cpu" in controllers.split(","):
            quota = _v1_quota(cgroup_root / controllers, path)
        else:
            continue
        if quota is not None:
            return quota
    return None


def _v2_quota(root: Path, path: str) -> float | None:
    """The smallest `cpu.max` from the process's group up to the root: a parent's limit
    binds its children too."""
    limits = []
    group = root / path.strip("/")
    for directory in (group, *group.parents):
        limit = _read_v2_limit(directory / "cpu.max")
        if limit is not None:
            limits.append(limit)
        if directory == root:
            break
    return min(limits, default=None)


def _read_v2_limit(file: Path) -> float | None:
    try:
        quota, period = file.read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(mount: Path, path: str) -> float | None:
    # Without a cgroup namespace a container sees its host's path for its group, while
    # the mount shows the group itself at its root: try the path, then the root.
    for directory in (mount / path.strip("/"), mount):
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
