"""The soak tool: a few seconds of it against a real `atopen serve --workers 2`."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from support import run_command

from content_sources.client import classify_client
from loadtest.soak import (
    APPLE_PROXY,
    COUNTDOWN,
    GMAIL_PROXY,
    LASTING_KINDS,
    YAHOO_PROXY,
    CacheFill,
    Sample,
    caches_report,
    campaign_block,
    key_kind,
    reader_user_agents,
)
from renderers.resources import LocalResources, builtin_fonts
from server.blocks.compiling import compile_block
from server.web.templates_dir import TEMPLATES_DIR


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


def test_readers_user_agents_are_distinct_and_read_as_readers_apps() -> None:
    agents = reader_user_agents(3000)
    assert len(set(agents)) == 3000
    assert agents == reader_user_agents(3000)  # the same ones every run, so runs compare
    kinds = {classify_client(agent).kind for agent in agents}
    assert kinds == {"browser", "outlook_desktop"}


@pytest.mark.parametrize(
    ("agent", "kind"),
    [(APPLE_PROXY, "apple_mpp"), (GMAIL_PROXY, "gmail_proxy"), (YAHOO_PROXY, "yahoo_proxy")],
)
def test_the_proxies_are_recognised_as_the_proxies_they_are(agent: str, kind: str) -> None:
    assert classify_client(agent).kind == kind


def test_a_campaign_is_the_starter_countdown_with_its_own_link() -> None:
    countdown = orjson.loads((TEMPLATES_DIR / "blocks" / f"{COUNTDOWN}.json").read_bytes())
    campaign = campaign_block(countdown, 7)
    links = [v["link"] for v in campaign["variants"]] + [campaign["default"]["link"]]
    assert links == ["https://shop.example.com/deals?campaign=7"] * len(links)
    design = [v["layers"] for v in countdown["variants"]]
    assert [v["layers"] for v in campaign["variants"]] == design
    assert countdown["default"]["link"] == "https://shop.example.com/deals"  # left as it was
    # Still a valid block (the soak run below also stores campaigns through the API).
    block = compile_block("campaign-7", campaign, 1, LocalResources([], builtin_fonts()))
    assert block.hosts == frozenset({"shop.example.com"})


def _sample_with(*caches: CacheFill) -> Sample:
    return Sample(0, {}, {}, {}, {}, 0, 0, {}, {}, 0, 0, 0, 0, list(caches))


def test_the_cache_report_tells_full_from_settled_from_still_filling() -> None:
    def fill(cache: str, sent: float, bound: float = 100) -> CacheFill:
        return CacheFill(cache, bound, "entries", sent, sent / 2, sent / 2 >= bound)

    first = _sample_with(fill("full", 300), fill("settled", 10), fill("growing", 10))
    last = _sample_with(fill("full", 900), fill("settled", 10), fill("growing", 40))
    lines = caches_report(first, last).splitlines()
    assert lines[1].startswith("full")
    assert lines[1].endswith("entries, full")
    assert lines[2].startswith("settled")
    assert lines[2].endswith("no new keys")
    assert lines[3].startswith("growing")
    assert lines[3].endswith("still filling")
    assert "150.0" in lines[1]
    assert "450.0" in lines[1]


@pytest.fixture(scope="module")
def soak_run() -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    command = [sys.executable, "-m", "loadtest.soak", "--seconds", "4", "--warmup", "2"]
    command += ["--rate", "40", "--recipients", "100", "--campaigns", "3", "--json"]
    result = run_command(command, timeout=180)
    samples: list[dict[str, Any]] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return result, samples


@pytest.mark.slow
def test_the_run_ends_well_and_prints_a_table(
    soak_run: tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]],
) -> None:
    result, _ = soak_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for row in ("worker 1 RSS MiB", "worker 2 open fds", "store keys", "growth"):
        assert row in result.stdout
    # Two seconds at 40 requests a second fill no cache of 4,096: the report says so.
    assert "countdown choices" in result.stdout
    assert "still filling" in result.stdout


@pytest.mark.slow
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
        for pid, rss in sample["rss_mib"].items():  # parts of it, each some of it
            assert 0 < sample["heap_mib"][pid] + sample["anonymous_mib"][pid] < rss
        assert all(3 < fds < 10_000 for fds in sample["fds"].values())
        assert sample["keys"] > 100  # the seeded profiles, at least
        assert sample["store_mib"] > 0
        assert sample["expiring_without_ttl"] == {}
        assert sample["failures"] == 0
    sent = [s["requests"] for s in samples]
    assert sent[0] > 0
    assert sent == sorted(sent)
    assert sent[-1] > sent[0]


@pytest.mark.slow
def test_cache_figures_grow_with_what_was_sent_and_the_servers_own_counts(
    soak_run: tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]],
) -> None:
    _, samples = soak_run
    first, last = ({c["cache"]: c for c in s["caches"]} for s in (samples[0], samples[-1]))
    assert first["countdown choices"]["bound"] == 4096
    assert 0 < first["countdown choices"]["sent"] < last["countdown choices"]["sent"]
    assert not last["countdown choices"]["full"]
    assert last["countdown choices"]["per_worker"] == last["countdown choices"]["sent"] / 2
    assert last["render memory cache"]["bound"] == 1
    assert last["render memory cache"]["unit"] == "MiB"
    assert last["render memory cache"]["sent"] > 0
    assert 0 < last["client kinds of User-Agents"]["sent"] <= 3 + 3000
    assert 1 <= last["time zones"]["sent"] <= 6  # the population's zones
    # The server counts its own renders and render cache misses (/metrics), summed over
    # both workers: every render was a miss first. A render is counted at once and a
    # miss within the second (each worker writes its local tallies every second), so the
    # first sample's renders are compared with a later sample's misses.
    assert 0 < samples[0]["renders"] <= samples[-1]["render_memory_misses"]
    assert samples[-1]["render_memory_misses"] >= samples[0]["render_memory_misses"]
