"""`engagement` in rules: human opens and clicks, counted from the records, so a block
can cap how often a reader sees a promotion whatever their mail app prefetches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, human_record, put_block, signed
from test_classify import APPLE_MPP, CURL, GMAIL_PROXY, IPHONE_MAIL
from test_records import open_as
from test_stats import clicks_later

from content_sources.redis_keys import rfm_key
from server.api.app_state import OPEN_LOG
from server.records.record import Record, RecordType
from server.records.segments_job import recompute_segments
from server.records.writes import RecordWriter

NOW = datetime.now(UTC)


def capped(rule: str) -> dict[str, Any]:
    """A block that shows `promo` while `rule` holds, else the default."""
    return {
        "width": 120,
        "height": 40,
        "variants": [
            {
                "name": "promo",
                "when": rule,
                "layers": [{"type": "fill", "color": "#cc0000"}],
                "link": "https://shop.example.com/promo",
            }
        ],
        "default": {
            "layers": [{"type": "fill", "color": "#222222"}],
            "link": "https://shop.example.com/",
        },
    }


async def opened(client: TestClient[Any, Any], block: str, user_agent: str) -> str:
    """An open by u1, written to the store before the next one (as the flush would)."""
    variant = await open_as(client, signed(f"/i/{block}.png?r=u1"), user_agent)
    await client.app[OPEN_LOG].flush()
    return variant


async def test_a_frequency_cap_stops_a_promotion_after_three_human_opens(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "promo", capped("engagement.opens(days=7, block='promo') < 3"))
    # Apple's prefetches and a scanner fetch do not count: the reader has not seen it.
    for machine in (APPLE_MPP, APPLE_MPP, APPLE_MPP, CURL, CURL):
        assert await opened(client, "promo", machine) == "promo"
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"  # 1st human open
    assert await opened(client, "promo", GMAIL_PROXY) == "promo"  # 2nd
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"  # 3rd
    assert await opened(client, "promo", IPHONE_MAIL) == "default"  # capped
    assert await opened(client, "promo", APPLE_MPP) == "default"
    # Another reader is not capped by u1's opens.
    assert await open_as(client, signed("/i/promo.png?r=u2"), IPHONE_MAIL) == "promo"


async def test_opens_of_other_blocks_count_only_without_block(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "promo", capped("engagement.opens(block='promo') < 1"))
    await put_block(client, "any", capped("engagement.opens() < 1"))
    await put_block(client, "other", capped("true"))
    assert await opened(client, "other", IPHONE_MAIL) == "promo"
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"  # u1 never opened promo
    assert await opened(client, "any", IPHONE_MAIL) == "default"  # u1 opened two blocks


async def test_clicks_and_the_last_open_are_seen_by_rules(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "seen", capped("engagement.last_open.year > 2000"))
    await put_block(client, "clicked", capped("engagement.clicks(days=30) >= 1"))
    # No human open yet: `last_open` is missing and the variant falls through.
    assert await opened(client, "seen", APPLE_MPP) == "default"
    assert await opened(client, "seen", IPHONE_MAIL) == "default"  # the open being answered
    assert await opened(client, "seen", IPHONE_MAIL) == "promo"
    assert await opened(client, "clicked", IPHONE_MAIL) == "default"
    await clicks_later(client, redis_url, "clicked", ["u1"])
    assert await opened(client, "clicked", IPHONE_MAIL) == "promo"


async def test_an_unsigned_open_has_no_engagement_and_counts_for_no_one(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "promo", capped("engagement.opens() < 1"))
    for _ in range(3):
        assert await open_as(client, "/i/promo.png?r=u1", IPHONE_MAIL) == "default"
    await client.app[OPEN_LOG].flush()
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"


async def test_erasing_a_profile_erases_its_engagement(client: TestClient[Any, Any]) -> None:
    await put_block(client, "promo", capped("engagement.opens() < 1"))
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"
    assert await opened(client, "promo", IPHONE_MAIL) == "default"
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    assert (await client.delete("/api/v1/profiles/u1", headers=AUTH)).status == 204
    assert await opened(client, "promo", IPHONE_MAIL) == "promo"


def human(type_: RecordType, block: str, recipient: str, days_ago: float) -> Record:
    return human_record(type_, block, "promo", recipient, NOW - timedelta(days=days_ago))


async def test_segments_count_human_opens_and_clicks(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    """Buyers whose purchases alone make no segment: reading a lot makes one hyperactive,
    having stopped reading for six months a zombie, reading half as much as before (a
    big spender) a fading star."""
    buyers = {"reader": 20.0, "gone": 20.0, "fading": 500.0, "quiet": 1.0, "other": 2.0}
    events = [
        {
            "recipient": r,
            "type": "purchase",
            "ts": (NOW - timedelta(days=40)).isoformat(),
            "props": {"amount": amount},
            "id": f"p-{r}",
        }
        for r, amount in buyers.items()
    ]
    response = await client.post("/api/v1/events", json=events, headers=AUTH)
    assert response.status == 202
    activity = [
        *(human("open", "news", "reader", d) for d in (1, 3, 5, 8, 13)),
        human("click", "news", "reader", 3),
        *(human("open", "news", "gone", d) for d in (200, 230, 260)),
        *(human("open", "news", "fading", d) for d in (100, 110, 120, 130, 140, 150)),
        human("open", "news", "fading", 20),
        # A prefetch never counts: Apple fetched for "quiet", nobody read.
        human("open", "news", "quiet", 2)._replace(client="apple_mpp", fetch_class="prefetch"),
    ]
    writer = RecordWriter(max_records=1_000, retention_s=86_400, click_memory_s=86_400)
    async with aioredis.from_url(redis_url) as store:
        for command in writer.commands(activity, NOW.timestamp()):
            await store.execute_command(*command)
        await recompute_segments(store, NOW)
        segments: dict[str, list[str]] = {}
        for r in buyers:
            raw = await store.get(rfm_key(r))
            assert raw is not None, r
            segments[r] = orjson.loads(raw)["segments"]
    assert "hyperactive" in segments["reader"]
    assert "zombie" in segments["gone"]
    assert "fading_star" in segments["fading"]
    for name in ("hyperactive", "zombie", "fading_star"):
        assert name not in segments["quiet"]
        assert name not in segments["other"]
    assert "hyperactive" not in segments["gone"]
    assert "zombie" not in segments["reader"]
