"""Opens of shared content whose image is in memory are answered without waiting for
anything, and still are everything an open is: checked for their signature, shed when
the loop is late, recorded for the click and the impression, and counted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from support import AUTH, contract_token, decode, put_block, signed
from test_opens import remembered_renders
from test_serving import SHARED_BLOCK, StalledLoop, metric

from server.records.open_log import impressions_key
from server.settings import Settings

# Kept long enough that every open of a test shares one read of the stock.
KEPT_MS = 60_000
READERS = [f"reader{i}" for i in range(6)]


async def shared_client(make_client: Any, settings: Settings, **changes: Any) -> Any:
    client = await make_client(replace(settings, inventory_max_age_ms=KEPT_MS, **changes))
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    await put_block(client, "shared", SHARED_BLOCK)
    # The first opens read the stock, decide and draw: the choice and the image are
    # kept from then on.
    for reader in ("first", "second"):
        opened = await client.get(signed(f"/i/shared.png?r={reader}"))
        assert opened.headers["X-Atopen-Variant"] == "stock"
    return client


async def test_every_open_from_memory_is_counted_remembered_and_clickable(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await shared_client(make_client, settings)
    cached = await metric(client, "atopen_requests_total", route="image", outcome="cached")
    hits = await metric(client, "atopen_cache_total", tier="memory", result="hit")
    for reader in READERS:
        response = await client.get(signed(f"/i/shared.png?r={reader}"))
        assert response.status == 200
        assert response.headers["X-Atopen-Variant"] == "stock"
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Request-Id"]
        assert decode(await response.read()).size == (300, 100)
    opens = len(READERS)
    assert await metric(client, "atopen_requests_total", route="image", outcome="cached") == (
        cached + opens
    )
    assert await metric(client, "atopen_cache_total", tier="memory", result="hit") == hits + opens
    day = datetime.now(UTC).date().isoformat()
    remembered = await remembered_renders(redis_url, "shared", READERS)
    assert all(b'"variant":"stock"' in entry for entry in remembered)
    async with aioredis.from_url(redis_url) as store:
        impressions = await store.hget(impressions_key("shared", day), "stock")
        assert impressions == str(opens + 2).encode()
    for reader in READERS:
        click = await client.get(signed(f"/c/shared?r={reader}"), allow_redirects=False)
        assert click.headers["Location"] == "https://shop.example.com/p/1"


async def test_a_reader_whose_id_is_percent_encoded_is_remembered_by_the_id_itself(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await shared_client(make_client, settings)
    first = await client.get(signed("/i/shared.png?r=first&dpr=2"))  # drawn at twice the size
    assert first.headers["X-Atopen-Variant"] == "stock"
    reader = "Jürgen K+1@example.com&x=y"
    url = signed(f"/i/shared.png?r={quote(reader, safe='')}&dpr=2")
    response = await client.get(url)
    assert response.headers["X-Atopen-Variant"] == "stock"
    assert decode(await response.read()).size == (600, 200)
    remembered = await remembered_renders(redis_url, "shared", [reader])
    assert b'"variant":"stock"' in remembered[0]


async def test_a_reader_signed_other_ways_gets_the_shared_choice_too(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    """A query in another order than atopen signs it, and a recipient token: answered
    through the full path, with the same image."""
    client = await shared_client(make_client, settings)
    in_order = signed("/i/shared.png?dpr=2&r=u-ordered")
    path, _, query = in_order.partition("?")
    dpr, reader, sig = query.split("&")
    token = contract_token(settings.secrets[0], "u-token")
    for url in (f"{path}?{reader}&{sig}&{dpr}", f"/i/shared.png?r=u-token&t={token}"):
        response = await client.get(url)
        assert response.headers["X-Atopen-Variant"] == "stock", url
    remembered = await remembered_renders(redis_url, "shared", ["u-ordered", "u-token"])
    assert all(b'"variant":"stock"' in entry for entry in remembered)


async def test_each_format_and_scale_is_its_own_image(make_client: Any, settings: Settings) -> None:
    client = await shared_client(make_client, settings)
    for _ in range(2):  # drawn, then from memory
        jpg = await client.get(signed("/i/shared.jpg?r=u1&dpr=2"))
        assert jpg.headers["Content-Type"] == "image/jpeg"
        assert jpg.headers["X-Atopen-Variant"] == "stock"
        assert decode(await jpg.read()).size == (600, 200)
        png = await client.get(signed("/i/shared.png?r=u2"))
        assert png.headers["X-Atopen-Variant"] == "stock"
        assert decode(await png.read()).size == (300, 100)


async def test_a_forged_or_missing_signature_gets_the_default(
    make_client: Any, settings: Settings
) -> None:
    client = await shared_client(make_client, settings)
    good = signed("/i/shared.png?r=u1")
    forged = good[: -len("sig=xxxx")] + "sig=" + ("A" if good[-4] != "A" else "B") + good[-3:]
    for url in (forged, "/i/shared.png?r=u1", "/i/shared.png?r=u1&sig=%ff%fe"):
        response = await client.get(url)
        assert response.status == 200
        assert response.headers["X-Atopen-Variant"] == "default", url
    assert (await client.get(good)).headers["X-Atopen-Variant"] == "stock"


async def test_an_open_that_waited_out_its_deadline_gets_the_default_from_memory_too(
    make_client: Any, settings: Settings
) -> None:
    client = await shared_client(make_client, settings, render_deadline_ms=100)
    url = signed("/i/shared.png?r=u1")
    assert (await client.get(url)).headers["X-Atopen-Variant"] == "stock"
    before = await metric(client, "atopen_fallbacks_total", reason="overloaded")
    async with StalledLoop():
        response = await client.get(url)
    assert response.headers["X-Atopen-Variant"] == "default"
    assert await metric(client, "atopen_fallbacks_total", reason="overloaded") == before + 1
