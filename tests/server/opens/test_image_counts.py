"""Every image open shows in `/metrics`: counted by the kind of its outcome, and timed in
the bucket of its latency."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from server import metrics
from server.outcomes import Outcome


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_opens_are_counted_by_outcome_kind_and_timed_in_their_buckets() -> None:
    metrics.flush_local()
    outcomes = ("cached", "fallback", "rendered")
    before = {o: sample("atopen_requests_total", route="image", outcome=o) for o in outcomes}
    buckets = ("0.005", "2.5", "+Inf")
    below = {le: sample("atopen_request_seconds_bucket", route="image", le=le) for le in buckets}
    total = sample("atopen_request_seconds_sum", route="image")
    for outcome, seconds in [
        (Outcome.CACHED, 0.003),
        (Outcome.FALLBACK_DEADLINE, 0.005),
        (Outcome.FALLBACK_OVERLOADED, 2.4),
        (Outcome.RENDERED, 9.0),
    ]:
        metrics.IMAGE_ANSWERS.append((outcome, seconds))
    metrics.flush_local()
    added = {
        o: sample("atopen_requests_total", route="image", outcome=o) - before[o] for o in outcomes
    }
    assert added == {"cached": 1, "fallback": 2, "rendered": 1}
    # Cumulative buckets: each counts the opens at or under its bound.
    assert {
        le: sample("atopen_request_seconds_bucket", route="image", le=le) - below[le]
        for le in buckets
    } == {"0.005": 2, "2.5": 3, "+Inf": 4}
    spent = sample("atopen_request_seconds_sum", route="image") - total
    assert spent == pytest.approx(0.003 + 0.005 + 2.4 + 9.0)
