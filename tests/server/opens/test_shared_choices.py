"""Blocks whose rules read only shared data (inventory): opens while the same stock is
kept share one choice, and still follow a new version of the block, the stock, and the
reader for the click and the impression."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from support import AUTH, put_block, signed
from test_opens import remembered_renders
from test_serving import SHARED_BLOCK

from server.records.open_log import impressions_key
from server.settings import Settings

# Kept long enough that every open of a test shares one read of the stock.
KEPT_MS = 60_000


def needing(stock: int) -> dict[str, Any]:
    """The shared block, its variant shown from `stock` items on."""
    variant = {**SHARED_BLOCK["variants"][0], "when": f"inventory['sku-1'].stock >= {stock}"}
    return {**SHARED_BLOCK, "variants": [variant]}


async def stocked_client(make_client: Any, settings: Settings, block_id: str) -> Any:
    """An app keeping inventory reads, three of sku-1 in stock, and a block needing one."""
    client = await make_client(replace(settings, inventory_max_age_ms=KEPT_MS))
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    await put_block(client, block_id, needing(1))
    return client


async def variant_of(client: Any, url: str) -> str:
    response = await client.get(url)
    assert response.status == 200
    return str(response.headers["X-Atopen-Variant"])


async def test_a_new_version_of_the_block_decides_at_once(
    make_client: Any, settings: Settings
) -> None:
    client = await stocked_client(make_client, settings, "shared")
    assert [await variant_of(client, signed(f"/i/shared.png?r=u{i}")) for i in range(3)] == [
        "stock"
    ] * 3
    # The stock is still the one read, but the rule is not.
    await put_block(client, "shared", needing(5))
    assert await variant_of(client, signed("/i/shared.png?r=u3")) == "default"
    await put_block(client, "shared", needing(2))
    assert await variant_of(client, signed("/i/shared.png?r=u4")) == "stock"


async def test_stock_changed_here_shows_at_the_next_open(
    make_client: Any, settings: Settings
) -> None:
    client = await stocked_client(make_client, settings, "shared")
    assert await variant_of(client, signed("/i/shared.png?r=u1")) == "stock"
    assert await variant_of(client, signed("/i/shared.png?r=u2")) == "stock"
    await client.patch("/api/v1/inventory/sku-1", json={"stock": 0}, headers=AUTH)
    assert await variant_of(client, signed("/i/shared.png?r=u3")) == "default"


async def test_an_unsigned_open_of_a_shared_block_gets_the_default(
    make_client: Any, settings: Settings
) -> None:
    client = await stocked_client(make_client, settings, "shared")
    assert await variant_of(client, signed("/i/shared.png?r=u1")) == "stock"
    assert await variant_of(client, "/i/shared.png?r=u2&sig=forged") == "default"


async def test_every_reader_of_a_shared_choice_is_remembered_and_counted(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await stocked_client(make_client, settings, "counted")
    readers = [f"reader{i}" for i in range(5)]
    for reader in readers:
        assert await variant_of(client, signed(f"/i/counted.png?r={reader}")) == "stock"
    day = datetime.now(UTC).date().isoformat()
    remembered = await remembered_renders(redis_url, "counted", readers)
    assert all(b'"variant":"stock"' in entry for entry in remembered)
    async with aioredis.from_url(redis_url) as store:
        assert await store.hget(impressions_key("counted", day), "stock") == b"5"
    for reader in readers:
        response = await client.get(signed(f"/c/counted?r={reader}"), allow_redirects=False)
        assert response.headers["Location"] == "https://shop.example.com/p/1"


async def test_a_block_that_reads_nothing_shows_its_variant_to_everyone(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(replace(settings, inventory_max_age_ms=KEPT_MS))
    always = {**SHARED_BLOCK["variants"][0], "layers": [{"type": "fill", "color": "#00ff00"}]}
    del always["when"]
    await put_block(client, "plain", {**SHARED_BLOCK, "variants": [always]})
    assert [await variant_of(client, signed(f"/i/plain.png?r=u{i}")) for i in range(3)] == [
        "stock"
    ] * 3
