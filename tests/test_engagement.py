"""`engagement` in rules: human opens and clicks, counted from the records, so a block
can cap how often a reader sees a promotion whatever their mail app prefetches."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from support import AUTH, put_block, signed
from test_classify import APPLE_MPP, CURL, GMAIL_PROXY, IPHONE_MAIL
from test_records import open_as
from test_stats import clicks_later

from server.keys import OPEN_LOG


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
