"""The soak tool: a few seconds of it against a real `atopen serve --workers 2`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from support import run_command

from content_sources.client import classify_client
from loadtest.soak import (
    APPLE_PROXY,
    COUNTDOWN,
    FLAT_MIB_PER_MINUTE,
    GMAIL_PROXY,
    LASTING_KINDS,
    MAX_IN_FLIGHT,
    YAHOO_PROXY,
    CacheFill,
    MemoryPoint,
    Sample,
    caches_report,
    campaign_block,
    key_kind,
    reader_user_agents,
    trace_report,
    trends,
    verdict,
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


def _trace(
    rss: Sequence[tuple[float, float]], fds: Sequence[int] | None = None
) -> list[MemoryPoint]:
    """One worker (pid 7) at (second, MiB) points, with its own fds at each."""
    fds = fds or [40] * len(rss)
    return [
        MemoryPoint(at, {7: mib}, {7: count}, {7: count - 30}, 10)
        for (at, mib), count in zip(rss, fds, strict=True)
    ]


def test_memory_that_grew_then_levelled_off_is_flat() -> None:
    # 60 s of warm-up, 120 s measured: +3 MiB in the first minute, then +0.1.
    rss = [(60 + 10 * n, 190 + min(n, 6) * 0.5 + max(0, n - 6) * 0.017) for n in range(13)]
    (trend,) = trends(_trace(rss), 60, 120)
    assert trend.worker == 1
    assert trend.whole_mib_per_minute > 1
    assert 0 <= trend.last_half_mib_per_minute < 0.2
    assert trend.memory_flat
    assert trend.fds_flat


def test_memory_that_keeps_growing_is_growing_and_so_said() -> None:
    rss = [(60 + 10 * n, 190 + n * 0.1) for n in range(13)]  # +0.6 MiB a minute throughout
    found = trends(_trace(rss), 60, 120)
    assert found[0].last_half_mib_per_minute == pytest.approx(0.6)
    assert not found[0].memory_flat
    last = _sample_with()
    assert verdict(found, last, workers=1) == "verdict: worker 1 memory growing"


def test_a_short_window_calls_one_small_step_flat_and_a_big_one_growing() -> None:
    """A last half of 10 s (the short soak of `make bench`): a step of 0.1 MiB is a
    slope of +0.6 MiB a minute, but no more than one step of the allocator; 1 MiB is
    not."""
    small = [(45, 190.0), (55, 190.0), (65, 190.1)]
    (trend,) = trends(_trace(small), 45, 20)
    assert trend.last_half_mib_per_minute == pytest.approx(0.6)
    assert trend.memory_flat
    big = [(45, 190.0), (55, 190.0), (65, 191.0)]
    (trend,) = trends(_trace(big), 45, 20)
    assert not trend.memory_flat


def test_the_warm_up_is_left_out_of_the_trend() -> None:
    # Steep during the warm-up (caches filling), flat from its end on.
    rss = [(10 * n, 100 + 5 * n if n <= 6 else 130) for n in range(19)]
    (trend,) = trends(_trace(rss), 60, 120)
    assert trend.whole_mib_per_minute == 0
    assert trend.memory_flat


def test_open_fds_that_rise_in_the_last_half_are_growing() -> None:
    rss = [(60 + 10 * n, 190.0) for n in range(13)]
    fds = [40] * 7 + [41, 41, 42, 42, 43, 43]
    (trend,) = trends(_trace(rss, fds), 60, 120)
    assert (trend.fds_before, trend.fds_last_half) == (40, 43)
    assert not trend.fds_flat
    assert verdict([trend], _sample_with(), workers=1) == "verdict: worker 1 fds growing"


def test_open_fds_are_flat_when_no_higher_than_the_warm_up_took_them() -> None:
    # The warm-up's burst opened store connections that the window then used again.
    rss = [(10 * n, 190.0) for n in range(19)]
    fds = [40] * 4 + [46] + [42] * 7 + [44] * 7
    (trend,) = trends(_trace(rss, fds), 60, 120)
    assert (trend.fds_before, trend.fds_last_half) == (46, 44)
    assert trend.fds_flat


def test_the_verdict_names_keys_without_ttl_and_workers_without_a_trend() -> None:
    rss = [(60 + 10 * n, 190.0) for n in range(13)]
    found = trends(_trace(rss), 60, 120)
    assert verdict(found, _sample_with(), workers=1).startswith("verdict: flat memory")
    missing = Sample(0, {}, {}, {}, {}, 0, 0, {"remembered": 3}, {}, 0, 0, 0, 0, [])
    assert verdict(found, missing, workers=2) == (
        "verdict: 1 worker(s) without a trend (ended, or too short), 3 keys without a TTL"
    )


def test_the_trace_report_shows_each_minute_and_the_threshold() -> None:
    rss = [(10 * n, 150 + n) for n in range(19)]
    trace = _trace(rss)
    text = trace_report(trace, trends(trace, 60, 120), 120)
    lines = text.splitlines()
    # The last point of each minute: 50, 110, 170 s, and the one at 180 s.
    assert lines[0].split()[-8:] == ["50", "s", "110", "s", "170", "s", "180", "s"]
    assert lines[1].split()[-4:] == ["155.0", "161.0", "167.0", "168.0"]
    assert lines[2].split()[-4:] == ["40", "40", "40", "40"]  # own fds
    assert lines[3].split()[-4:] == ["10", "10", "10", "10"]  # of them, store connections
    assert lines[4].split()[-4:] == ["10", "10", "10", "10"]  # requests in flight
    assert f"{FLAT_MIB_PER_MINUTE:+.2f} MiB a minute" in text
    assert lines[-1].split()[2:5] == ["+6.00", "+6.00", "40/40"]
    assert lines[-1].endswith("memory growing, fds flat")


@pytest.fixture(scope="module")
def soak_run() -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    command = [sys.executable, "-m", "loadtest.soak", "--seconds", "4", "--warmup", "4"]
    command += ["--rate", "40", "--recipients", "100", "--campaigns", "3", "--every", "1"]
    command += ["--burst", "1"]  # from 1 to 2 s: half a warm-up this short is its settling
    result = run_command([*command, "--json"], timeout=180)
    figures: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return result, figures


@pytest.mark.slow
def test_the_run_ends_well_and_prints_a_table(
    soak_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, _ = soak_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for row in ("worker 1 RSS MiB", "worker 2 open fds", "store keys", "growth"):
        assert row in result.stdout
    # A warm-up of seconds fills no cache of 4,096, burst or not: the report says so.
    assert "countdown choices" in result.stdout
    assert "still filling" in result.stdout


@pytest.mark.slow
def test_three_samples_of_two_workers_with_sane_figures(
    soak_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, figures = soak_run
    samples = figures["samples"]
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
def test_memory_is_traced_every_interval_and_judged_per_worker(
    soak_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, figures = soak_run
    trace = figures["trace"]
    assert [round(point["at_s"]) for point in trace] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    pids = set(figures["samples"][0]["rss_mib"])
    for point in trace[4:]:  # the workers are up from the warm-up's end
        assert set(point["rss_mib"]) == pids
        for pid, own in point["own_fds"].items():  # less the load's connections
            assert 3 < own <= figures["samples"][-1]["fds"][pid]
            assert 1 <= point["store_connections"][pid] < own
    # The warm-up's burst held as many requests in flight as the load ever does.
    assert max(point["peak_in_flight"] for point in trace) == MAX_IN_FLIGHT
    assert [trend["worker"] for trend in figures["trends"]] == [1, 2]
    assert "trend of the measured window" in result.stdout
    assert "verdict: " in result.stdout


@pytest.mark.slow
def test_cache_figures_grow_with_what_was_sent_and_the_servers_own_counts(
    soak_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, figures = soak_run
    samples = figures["samples"]
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
