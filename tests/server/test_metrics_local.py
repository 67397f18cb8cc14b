"""Samples counted in the process first come out exactly as if written one by one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from server.metrics import LocalCount, LocalHistogram, flush_local

BUCKETS = (0.001, 0.005, 0.01, 0.5)
# On a bound, between bounds, below the first, above the last (+Inf), zero.
VALUES = (0.001, 0.005, 0.0049, 0.0007, 0.2, 0.5, 3.0, 0.0, 0.005, 120.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the creation times (which differ between two registries)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_local_histogram_writes_what_direct_observations_would() -> None:
    direct_registry, local_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=direct_registry)
    series = Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=local_registry)
    local = LocalHistogram(series.labels("image"))
    for value in VALUES:
        direct.labels("image").observe(value)
        local.observe(value)
    assert local_registry.get_sample_value("t_seconds_count", {"route": "image"}) == 0
    flush_local()
    assert samples(local_registry) == samples(direct_registry)
    # A second flush writes only what came since.
    direct.labels("image").observe(0.003)
    local.observe(0.003)
    flush_local()
    flush_local()
    assert samples(local_registry) == samples(direct_registry)


def test_a_local_count_writes_its_sum_once() -> None:
    registry = CollectorRegistry()
    series = Counter("c_total", "c", registry=registry)
    local = LocalCount(series)
    for _ in range(7):
        local.inc()
    local.inc(2.5)
    assert registry.get_sample_value("c_total") == 0
    flush_local()
    flush_local()
    assert registry.get_sample_value("c_total") == 9.5
