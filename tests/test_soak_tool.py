"""The soak tool: a few seconds of it against a real `atopen serve --workers 2`."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from support import run_command

from loadtest.soak import LASTING_KINDS, key_kind


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (b"atopen:profile:{u1}", "profile"),
        (b"atopen:remembered:{u1}", "remembered"),
        (b"atopen:impressions:hero:2026-12-05", "impressions"),
        (b"atopen:audit", "audit"),
        (b"{atopen:blocks}:workers", "{atopen:blocks}"),
    ],
)
def test_keys_are_sorted_into_kinds(key: bytes, kind: str) -> None:
    assert key_kind(key) == kind


def test_what_opens_and_clicks_write_is_expected_to_expire() -> None:
    for kind in ("remembered", "last-seen", "engagement", "last-click", "render", "http"):
        assert kind not in LASTING_KINDS


@pytest.fixture(scope="module")
def soak_run() -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    command = [sys.executable, "-m", "loadtest.soak", "--seconds", "4", "--warmup", "2"]
    command += ["--rate", "40", "--recipients", "100", "--json"]
    result = run_command(command, timeout=180)
    samples: list[dict[str, Any]] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return result, samples


def test_the_run_ends_well_and_prints_a_table(
    soak_run: tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]],
) -> None:
    result, _ = soak_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for row in ("worker 1 RSS MiB", "worker 2 open fds", "store keys", "growth"):
        assert row in result.stdout


def test_three_samples_of_two_workers_with_sane_figures(
    soak_run: tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]],
) -> None:
    _, samples = soak_run
    assert len(samples) == 3
    assert [s["at_s"] for s in samples] == sorted(s["at_s"] for s in samples)
    pids = set(samples[0]["rss_mib"])
    assert len(pids) == 2
    for sample in samples:
        assert set(sample["rss_mib"]) == pids  # no worker died or was replaced
        assert all(20 < rss < 4096 for rss in sample["rss_mib"].values())
        assert all(3 < fds < 10_000 for fds in sample["fds"].values())
        assert sample["keys"] > 100  # the seeded profiles, at least
        assert sample["store_mib"] > 0
        assert sample["expiring_without_ttl"] == {}
        assert sample["failures"] == 0
    sent = [s["requests"] for s in samples]
    assert sent[0] > 0
    assert sent == sorted(sent)
    assert sent[-1] > sent[0]
