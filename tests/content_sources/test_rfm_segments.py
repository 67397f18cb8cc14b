"""RFM scores and segments (`rfm`): the model, the recompute and its lock, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis.asyncio as aioredis

from content_sources import gather_context
from content_sources.clock import ClockSource
from content_sources.events import Event, EventLog
from content_sources.expressions import Expression, Missing, MissingValueError, Template
from content_sources.profile import ProfileSource
from content_sources.redis_keys import purchases_key, rfm_key
from content_sources.segments import (
    CUTS_KEY,
    DEFAULT_POLICY,
    Cuts,
    Purchase,
    SegmentsSource,
    amount_of,
    cut_points,
    decode_ledger,
    metrics_of,
    record_purchases,
    segments_of,
    write_records,
)
from content_sources.source import OpenRequest
from server.records.segments_job import (
    LOCK_KEY,
    recompute_if_due,
    recompute_segments,
    run_segments_job,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
History = Sequence[tuple[float, float]]  # (days ago, amount) per purchase


def ladder() -> dict[str, History]:
    """25 recipients; u{k} bought k+1 times, daily, the last (24-k)*10 days ago, 10 each.

    Recency, frequency and amount all rise with k, five recipients per step, so each
    score is 1 + k // 5 and the cut points are recency 40/90/140/190 days, frequency
    5/10/15/20 purchases, monetary 50/100/150/200.
    """
    return {f"u{k:02d}": [((24 - k) * 10 + j, 10.0) for j in range(k + 1)] for k in range(25)}


LADDER_CUTS = Cuts((40, 90, 140, 190), (5, 10, 15, 20), (50, 100, 150, 200))


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.from_url(redis_url) as client:
        yield client


def purchases(history: History) -> list[Event]:
    return [
        Event(f"p{i}", "purchase", NOW - timedelta(days=days), {"amount": amount})
        for i, (days, amount) in enumerate(history)
    ]


async def seed_events(store: aioredis.Redis, histories: dict[str, History]) -> None:
    """Store purchases (and a view each, which RFM ignores) through the events store."""
    log = EventLog(store, max_per_recipient=500, retention=timedelta(days=1000))
    events = [(r, e) for r, history in histories.items() for e in purchases(history)]
    events += [(r, Event("v", "view", NOW, {"amount": 999})) for r in histories]
    await log.store(events, NOW)


async def record(store: aioredis.Redis, recipient: str) -> dict[str, object]:
    raw = await store.get(rfm_key(recipient))
    assert raw is not None, f"no record for {recipient}"
    value: dict[str, object] = orjson.loads(raw)
    return value


def segments(history: History, cuts: Cuts = LADDER_CUTS) -> tuple[str, ...]:
    bought = [Purchase(int((NOW - timedelta(days=d)).timestamp() * 1000), a) for d, a in history]
    metrics = metrics_of(bought, NOW, DEFAULT_POLICY)
    assert metrics is not None
    return segments_of(metrics, cuts)


async def test_recompute_scores_quintiles_over_the_base(store: aioredis.Redis) -> None:
    await seed_events(store, ladder())
    report = await recompute_segments(store, NOW)
    assert (report.base, report.written) == (25, 25)
    assert report.folded == sum(k + 1 for k in range(25))  # purchases only, not the views
    assert report.cuts == LADDER_CUTS
    for k in range(25):
        stored = await record(store, f"u{k:02d}")
        assert (stored["r"], stored["f"], stored["m"]) == (1 + k // 5,) * 3, k
        assert (stored["frequency"], stored["monetary"]) == (k + 1, 10.0 * (k + 1))
        assert stored["recency_days"] == (24 - k) * 10
    expected = {
        # first purchase 24 days ago: new before hyperactive (R5 F5) and loyal
        "u24": ("new", ["new", "hyperactive", "loyal"]),
        "u23": ("hyperactive", ["hyperactive", "loyal"]),
        "u17": ("loyal", ["loyal"]),  # R4 F4, still buying in the last 90 days
        # bought 90..105 days ago, nothing since: M4 and declining on every axis
        "u15": ("fading_star", ["fading_star", "loyal"]),
        "u12": ("other", []),  # R3 F3 M3
        "u01": ("zombie", ["zombie"]),  # two purchases, the last 230 days ago
    }
    for recipient, (segment, matching) in expected.items():
        stored = await record(store, recipient)
        assert (stored["segment"], stored["segments"]) == (segment, matching), recipient
    assert orjson.loads(await store.get(CUTS_KEY) or b"{}")["base"] == 25


async def test_the_rfm_source_answers_rules(store: aioredis.Redis) -> None:
    await seed_events(store, ladder())
    await recompute_segments(store, NOW)
    sources = (ProfileSource(), ClockSource(), SegmentsSource())

    async def context_of(recipient: str) -> dict[str, object]:
        request = OpenRequest(at=NOW, recipient=recipient, block_tz="Europe/Warsaw")
        return await gather_context(store, sources, request, frozenset({"rfm"}))

    loyal = await context_of("u17")
    assert Expression("rfm.segment == 'loyal'").holds(loyal)
    assert Expression("rfm.r == 4 and rfm.frequency >= 18 and 'loyal' in rfm.segments").holds(loyal)
    assert Template("{{ rfm.computed_at.hour }}").render(loyal) == "2"  # in the open's zone
    assert not Expression("rfm.segment == 'loyal'").holds(await context_of("u12"))
    nobody = await context_of("never-bought")
    assert isinstance(nobody["rfm"], Missing)
    with pytest.raises(MissingValueError):
        Expression("rfm.segment == 'loyal'").holds(nobody)
    assert Template("{{ rfm.segment | default('none') }}").render(nobody) == "none"


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param([(3, 20.0)], ("new",), id="new: first purchase 3 days ago"),
        pytest.param([(30, 20.0)], (), id="not new: first purchase 30 days ago"),
        pytest.param(
            [(300, 10.0)] + [(d, 10.0) for d in range(1, 21)],
            ("hyperactive", "loyal"),
            id="hyperactive: R5 F5",
        ),
        pytest.param([(d, 5.0) for d in range(100, 251, 10)], ("loyal",), id="loyal: R3 F4 M2"),
        pytest.param([(d, 10.0) for d in range(150, 261, 10)], ("at_risk",), id="at_risk: R2 F3"),
        pytest.param([(200, 10.0), (400, 10.0)], ("zombie",), id="zombie: R1, 2 purchases"),
        pytest.param([(200, 10.0)], (), id="not zombie: only one purchase ever"),
        pytest.param(
            [(190, 200.0), (400, 10.0)], ("zombie", "at_risk"), id="zombie before at_risk (M4)"
        ),
        pytest.param(
            [(60, 30.0), (95, 30.0)] + [(d, 30.0) for d in range(100, 180, 9)],
            ("fading_star",),
            id="fading_star: M5; fewer, smaller, and R5 90 days ago is R4 now",
        ),
        pytest.param(
            [(10, 30.0), (95, 30.0)] + [(d, 30.0) for d in range(100, 180, 9)],
            (),
            id="not fading: bought 10 days ago, R5 then and now",
        ),
        pytest.param([(100, 10.0)], (), id="other: R3 F1 M1"),
    ],
)
def test_each_named_segment(history: History, expected: tuple[str, ...]) -> None:
    assert segments(history) == expected


def test_cut_points_are_quintiles_and_ties_share_the_lower_bin() -> None:
    assert cut_points(range(1, 11)) == (2, 4, 6, 8)
    assert cut_points([7]) == (7, 7, 7, 7)
    assert cut_points([]) == ()
    # 60 % bought once: every one-time buyer gets F = 1, and more purchases score higher.
    cuts = Cuts((), cut_points([1] * 6 + [2, 3, 4, 5]), ())
    assert cuts.frequency == (1.0, 1.0, 1.0, 3.0)
    one_time = metrics_of([Purchase(int(NOW.timestamp() * 1000), 1.0)], NOW, DEFAULT_POLICY)
    assert one_time is not None
    assert cuts.scores(one_time) == (5, 1, 1)  # no cut points: recency 5, the rest 1


async def test_purchases_are_kept_longer_than_events(store: aioredis.Redis) -> None:
    events = EventLog(store, max_per_recipient=500, retention=timedelta(days=90))
    old = [("z1", e) for e in purchases([(200, 50.0), (300, 50.0)])]
    assert await events.store(old, NOW) == ["older than retention (90 days)"] * 2
    assert await record_purchases(store, old, NOW) == 0  # no cut points yet: ledger only
    assert len(decode_ledger(await store.hgetall(purchases_key("z1")))) == 2
    await recompute_segments(store, NOW)
    assert (await record(store, "z1"))["segment"] == "zombie"


async def test_a_new_purchase_is_scored_at_once_against_the_last_cut_points(
    store: aioredis.Redis,
) -> None:
    await seed_events(store, ladder())
    await recompute_segments(store, NOW)
    arrived = [("n1", e) for e in purchases([(0, 500.0)])]
    assert await record_purchases(store, arrived, NOW) == 1
    assert await record_purchases(store, arrived, NOW) == 1  # the same event id: kept once
    stored = await record(store, "n1")
    assert (stored["r"], stored["f"], stored["m"], stored["segment"]) == (5, 1, 5, "new")
    assert stored["frequency"] == 1


async def test_the_fold_and_the_api_read_amounts_alike(store: aioredis.Redis) -> None:
    props: list[dict[str, object]] = [
        {"amount": 7.5},
        {"amount": 3},
        {"amount": "12"},
        {"amount": -5},
        {"amount": True},
        {},
    ]
    events = [
        ("a1", Event(f"p{i}", "purchase", NOW - timedelta(days=1), p)) for i, p in enumerate(props)
    ]
    await EventLog(store, max_per_recipient=50, retention=timedelta(days=30)).store(events, NOW)
    await recompute_segments(store, NOW)  # the fold: a script in Redis
    folded = decode_ledger(await store.hgetall(purchases_key("a1")))
    await record_purchases(store, [(r, e) for r, e in events], NOW)  # the API path: Python
    recorded = decode_ledger(await store.hgetall(purchases_key("a1")))
    expected = [amount_of(p) for p in props]
    assert expected == [7.5, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert [folded[f"p{i}".encode()].amount for i in range(6)] == expected
    assert [recorded[f"p{i}".encode()].amount for i in range(6)] == expected


async def test_one_of_many_processes_recomputes(store: aioredis.Redis) -> None:
    await seed_events(store, ladder())
    results = await asyncio.gather(
        recompute_if_due(store, NOW, interval_s=3600), recompute_if_due(store, NOW, interval_s=3600)
    )
    assert sorted(r is None for r in results) == [False, True]
    assert 0 < await store.ttl(LOCK_KEY) <= 3600
    assert await recompute_if_due(store, NOW, interval_s=3600) is None  # not due again yet


async def test_the_job_recomputes_in_the_background(store: aioredis.Redis) -> None:
    now = datetime.now(UTC)
    event = Event("p1", "purchase", now - timedelta(days=2), {"amount": 5})
    await EventLog(store, max_per_recipient=50, retention=timedelta(days=30)).store(
        [("b1", event)], now
    )
    job = asyncio.create_task(run_segments_job(store, interval_s=3600))
    try:
        # The store has nothing to wait on: poll it (pytest-timeout bounds the wait).
        while not await store.exists(rfm_key("b1")):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    assert (await record(store, "b1"))["segment"] == "new"


async def test_an_erased_recipient_is_not_written_back(store: aioredis.Redis) -> None:
    assert await write_records(store, {"gone": b"{}"}) == 0
    assert not await store.exists(rfm_key("gone"))


@pytest.mark.parametrize("reply", [b"not json", b"[1]", b'{"r": "x"}', 42, None])
def test_the_source_survives_garbage_and_asks_nothing_without_a_recipient(
    reply: object,
) -> None:
    source = SegmentsSource()
    assert source.commands(OpenRequest(at=NOW)) == ()
    assert isinstance(source.build(OpenRequest(at=NOW, recipient="u1"), [reply], {}), Missing)
    assert isinstance(source.build(OpenRequest(at=NOW, recipient="u1"), [], {}), Missing)
