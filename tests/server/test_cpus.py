"""The default worker count follows the CPUs a process may use, not the host's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.cpus import count_usable_cpus, cpu_quota, usable_cpus
from server.settings import Settings

# What this machine lets the test process run on: the ceiling of every answer below.
AVAILABLE = len(os.sched_getaffinity(0))


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A control-group file system under `tmp_path`, and a /proc/self/cgroup naming the
    process's group in it."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(membership)
    return root, self_cgroup


@pytest.mark.parametrize(
    ("limits", "quota", "usable"),
    [
        # A container limited to one and a half CPUs: one worker, not a throttled second.
        ({"app/cpu.max": "150000 100000"}, 1.5, 1),
        # A limit on a parent group binds the process's group too.
        ({"cpu.max": "100000 100000", "app/cpu.max": "max 100000"}, 1.0, 1),
        ({"app/cpu.max": "max 100000"}, None, AVAILABLE),
    ],
)
def test_a_cgroup_v2_limit_caps_the_cpus(
    tmp_path: Path, limits: dict[str, str], quota: float | None, usable: int
) -> None:
    root, self_cgroup = cgroup_tree(tmp_path, "0::/app\n", limits)
    assert (cpu_quota(root, self_cgroup), count_usable_cpus(root, self_cgroup)) == (quota, usable)


def test_the_tightest_limit_from_the_group_up_applies(tmp_path: Path) -> None:
    root, self_cgroup = cgroup_tree(
        tmp_path,
        "0::/kubepods/pod1/app\n",
        {
            "kubepods/cpu.max": "400000 100000",
            "kubepods/pod1/cpu.max": "100000 100000",
            "kubepods/pod1/app/cpu.max": "max 100000",
        },
    )
    assert cpu_quota(root, self_cgroup) == 1.0
    assert count_usable_cpus(root, self_cgroup) == 1


@pytest.mark.parametrize(
    ("quota_us", "quota", "usable"),
    # Half a CPU still gets one worker.
    [("200000", 2.0, min(2, AVAILABLE)), ("50000", 0.5, 1), ("-1", None, AVAILABLE)],
)
def test_a_cgroup_v1_quota_caps_the_cpus(
    tmp_path: Path, quota_us: str, quota: float | None, usable: int
) -> None:
    root, self_cgroup = cgroup_tree(
        tmp_path,
        "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": quota_us,
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        },
    )
    assert (cpu_quota(root, self_cgroup), count_usable_cpus(root, self_cgroup)) == (quota, usable)


def test_a_v1_container_that_sees_its_group_at_the_mount_root(tmp_path: Path) -> None:
    # No cgroup namespace: the membership names the host's path, which is not mounted.
    root, self_cgroup = cgroup_tree(
        tmp_path,
        "4:cpu,cpuacct:/docker/abc\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "100000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cpu_quota(root, self_cgroup) == 1.0


def test_no_control_groups_means_the_affinity_alone(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "none", tmp_path / "no-such-file") is None
    assert count_usable_cpus(tmp_path / "none", tmp_path / "no-such-file") == AVAILABLE
    garbled, self_cgroup = cgroup_tree(tmp_path, "0::/app\n", {"app/cpu.max": "lots"})
    assert count_usable_cpus(garbled, self_cgroup) == AVAILABLE


def test_workers_and_render_threads_default_to_the_usable_cpus() -> None:
    settings = Settings()
    assert settings.worker_count == usable_cpus()
    assert usable_cpus() <= AVAILABLE
    # The CPUs shared out among the workers, and two render threads for each.
    assert settings.worker_cpus == 1
    assert settings.render_thread_count == 2
    assert Settings(workers=1).worker_cpus == usable_cpus()
    assert Settings(workers=1).render_thread_count == 2 * usable_cpus()
    assert Settings(workers=1, render_threads=3).render_thread_count == 3
    # More workers than CPUs: each has a share of one, and one thread at least.
    crowded = Settings(workers=4 * usable_cpus())
    assert crowded.worker_cpus == 0.25
    assert crowded.render_thread_count == 1
