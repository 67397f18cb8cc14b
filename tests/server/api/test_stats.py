"""Reports: `GET /api/v1/blocks/{id}/stats` with from, to and by; the experiment section;
unique counts within HyperLogLog's error; Wilson and the two-proportion test against
published worked examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, human_record, put_block, refused_fields, signed
from test_classify import APPLE_MPP, CURL, GMAIL_PROXY, IPHONE_MAIL, SAFARI
from test_records import click_as, offer, open_as

from content_sources.redis_keys import remembered_key
from server.api.app_state import OPEN_LOG
from server.blocks.experiments import Split
from server.records.record import Record, RecordType
from server.records.reports import block_report
from server.records.significance import two_proportion_p_value, wilson_interval
from server.records.writes import RecordWriter


# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison
# of seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (the Wilson
# score interval without continuity correction), to the four decimals it prints.
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombes_worked_examples(
    successes: int, trials: int, low: float, high: float
) -> None:
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)


def test_two_proportion_p_value_matches_statsmodels_documented_example() -> None:
    # statsmodels' `proportions_ztest` documentation: count = [5, 12], nobs = [83, 99]
    # gives a two-sided p-value printed as 0.159
    # (https://www.statsmodels.org/stable/generated/statsmodels.stats.proportion.proportions_ztest.html).
    assert round(two_proportion_p_value(5, 83, 12, 99), 3) == 0.159
    # Swapping the groups changes nothing in a two-sided test; equal rates give 1.
    assert two_proportion_p_value(12, 99, 5, 83) == pytest.approx(
        two_proportion_p_value(5, 83, 12, 99)
    )
    assert two_proportion_p_value(10, 100, 20, 200) == pytest.approx(1.0)


async def test_rows_by_variant_client_country_and_day(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "offer", offer())
    for r in ("u1", "u2", "u3"):
        await open_as(client, signed(f"/i/offer.png?r={r}&m.v=a"), IPHONE_MAIL)
    await open_as(client, signed("/i/offer.png?r=u1&m.v=a"), IPHONE_MAIL)  # u1 again
    await open_as(client, signed("/i/offer.png?r=u4&m.v=b"), GMAIL_PROXY)
    await open_as(client, signed("/i/offer.png?r=u5&m.v=b"), APPLE_MPP)
    await open_as(client, signed("/i/offer.png?r=u6&m.v=b"), CURL)
    await client.app[OPEN_LOG].flush()
    await clicks_later(client, redis_url, "offer", ["u1", "u4"])

    by_variant = await stats(client, "by=variant")
    assert set(by_variant) >= {"id", "from", "to", "by", "rows"}
    assert by_variant["by"] == "variant"
    assert "experiment" not in by_variant  # no split
    rows = {row["key"]: row for row in by_variant["rows"]}
    assert rows["a"] == {
        "key": "a",
        "impressions": 4,
        "human_opens": 4,
        "machine_fetches": 0,
        "unique_readers": 3,
        "clicks": 1,
        "unique_clickers": 1,
        "ctr": pytest.approx(1 / 3),
        "ctr_low": pytest.approx(wilson_interval(1, 3)[0]),
        "ctr_high": pytest.approx(wilson_interval(1, 3)[1]),
    }
    assert (rows["b"]["impressions"], rows["b"]["human_opens"], rows["b"]["machine_fetches"]) == (
        3,
        1,
        2,
    )
    assert (rows["b"]["unique_readers"], rows["b"]["unique_clickers"]) == (1, 1)

    by_client = {r["key"]: r["impressions"] for r in (await stats(client, "by=client"))["rows"]}
    assert by_client == {"browser": 4, "gmail_proxy": 1, "apple_mpp": 1, "bot": 1}
    by_country = (await stats(client, "by=country"))["rows"]
    assert [(r["key"], r["impressions"]) for r in by_country] == [("unknown", 7)]
    today = datetime.now(UTC).date()
    by_day = await stats(client, f"by=day&from={(today - timedelta(days=2)).isoformat()}T00:00:00Z")
    assert [(r["key"], r["impressions"], r["unique_readers"]) for r in by_day["rows"]] == [
        ((today - timedelta(days=2)).isoformat(), 0, 0),
        ((today - timedelta(days=1)).isoformat(), 0, 0),
        (today.isoformat(), 7, 4),
    ]


async def clicks_later(
    client: TestClient[Any, Any], redis_url: str, block_id: str, recipients: list[str]
) -> None:
    """People's clicks, a minute after they saw the image: the store's memory of when it
    was fetched is moved back a minute first (a click right after it is a gateway's)."""
    async with aioredis.from_url(redis_url) as store:
        for r in recipients:
            raw = await store.hget(remembered_key(r), block_id)
            assert raw is not None
            entry = orjson.loads(raw)
            entry["at"] -= 60
            await store.hset(remembered_key(r), block_id, orjson.dumps(entry))
    for r in recipients:
        await click_as(client, signed(f"/c/{block_id}?r={r}"), SAFARI)
    await client.app[OPEN_LOG].flush()


async def stats(client: TestClient[Any, Any], query: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/blocks/offer/stats?{query}", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_split_block_reports_each_arm_against_the_control(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "offer", offer({"a": 50, "b": 50}))
    shown: dict[str, list[str]] = {"a": [], "b": []}
    for i in range(40):
        variant = await open_as(client, signed(f"/i/offer.png?r=r{i}"), IPHONE_MAIL)
        shown[variant].append(f"r{i}")
    assert shown["a"]
    assert shown["b"]
    await client.app[OPEN_LOG].flush()
    # Every reader of b clicks, one reader of a does.
    await clicks_later(client, redis_url, "offer", [*shown["b"], shown["a"][0]])
    report = await stats(client, "by=client")
    experiment = report["experiment"]
    assert experiment["control"] == "a"  # no holdout: the first arm
    (arm,) = experiment["arms"]
    na, nb = len(shown["a"]), len(shown["b"])
    assert arm["variant"] == "b"
    assert arm["ctr"] == pytest.approx(1.0)
    assert arm["lift"] == pytest.approx((1.0 - 1 / na) / (1 / na))
    assert arm["p_value"] == pytest.approx(two_proportion_p_value(nb, nb, 1, na))
    assert arm["significant"] is True


async def test_bad_report_parameters_are_refused_naming_the_field(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "offer", offer())
    for query, field in [
        ("by=week", "by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-05-02T00:00:00Z&to=2026-05-01T00:00:00Z", "from"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ]:
        response = await client.get(f"/api/v1/blocks/offer/stats?{query}", headers=AUTH)
        assert await refused_fields(response) == [field], query


async def test_days_keeps_answering_impressions_per_day_and_variant(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "offer", offer())
    await open_as(client, signed("/i/offer.png?r=u1&m.v=a"), IPHONE_MAIL)
    await client.app[OPEN_LOG].flush()
    response = await client.get("/api/v1/blocks/offer/stats?days=2", headers=AUTH)
    body = await response.json()
    today = datetime.now(UTC).date()
    assert body == {
        "id": "offer",
        "impressions": {today.isoformat(): {"a": 1}, (today - timedelta(days=1)).isoformat(): {}},
    }


async def test_unique_readers_are_within_hyperloglogs_error(redis_url: str) -> None:
    """20,000 readers, each opening twice, and 2,000 clickers: Redis's HyperLogLog has a
    standard error of 0.81% (https://redis.io/docs/latest/develop/data-types/probabilistic/hyperloglogs/);
    the estimates must be within three of them."""
    now = datetime.now(UTC).timestamp()
    writer = RecordWriter(max_records=1_000_000, retention_s=86_400, click_memory_s=86_400)

    at = datetime.fromtimestamp(now, UTC)

    def record(type_: RecordType, recipient: str) -> Record:
        return human_record(type_, "big", "a", recipient, at)

    readers = [f"reader-{i}" for i in range(20_000)]
    records = [record("open", r) for r in readers * 2]
    records += [record("click", r) for r in readers[:2_000]]
    async with aioredis.from_url(redis_url) as store:
        for start in range(0, len(records), 5_000):
            async with store.pipeline(transaction=False) as pipe:
                for command in writer.commands(records[start : start + 5_000], now):
                    pipe.execute_command(*command)
                await pipe.execute()
        day = datetime.now(UTC).date().isoformat()
        report = await block_report(store, "big", [day], "variant", Split({"a": 1}))
    rows = report["rows"]
    assert isinstance(rows, list)
    (row,) = rows
    assert row["impressions"] == 40_000
    assert row["clicks"] == 2_000
    assert row["unique_readers"] == pytest.approx(20_000, rel=3 * 0.0081)
    assert row["unique_clickers"] == pytest.approx(2_000, rel=3 * 0.0081)
