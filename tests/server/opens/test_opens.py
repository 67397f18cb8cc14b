"""The email-facing URLs end to end: real app, real Redis, real image bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from PIL import ImageChops
from sample_blocks import CART_REMINDER, greeting, slow_greeting
from support import AUTH, BUSY_STORE, decode, put_block, signed

from content_sources.redis_keys import remembered_key
from server.datastore.embedded_redis import EmbeddedRedis
from server.settings import Settings

NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def open_image(client: TestClient[Any, Any], url: str) -> tuple[str, Any]:
    response = await client.get(url)
    assert response.status == 200
    return response.headers["X-Atopen-Variant"], decode(await response.read())


async def click_target(client: TestClient[Any, Any], url: str) -> str:
    response = await client.get(url, allow_redirects=False)
    assert response.status == 302
    return response.headers["Location"]


async def remembered_renders(
    redis_url: str, block_id: str, recipients: Sequence[str]
) -> list[bytes]:
    """Each recipient's remembered render of the block. They are written off the response
    path: wait for all of them (bounded)."""
    async with aioredis.from_url(redis_url) as store:
        for _ in range(500):
            entries = [await store.hget(remembered_key(r), block_id) for r in recipients]
            written = [entry for entry in entries if isinstance(entry, bytes)]
            if len(written) == len(entries):
                return written
            await asyncio.sleep(0.02)
    raise AssertionError("a render was never remembered")


async def test_seed_scenario_cart_then_purchase(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "hero", CART_REMINDER)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    event = {
        "recipient": "u1",
        "type": "cart_abandoned",
        "ts": ago(hours=2),
        "props": {"item": "Trail boots"},
    }
    assert (await client.post("/api/v1/events", json=event, headers=AUTH)).status == 202

    variant, cart_image = await open_image(client, signed("/i/hero.png?r=u1"))
    assert variant == "cart"
    assert cart_image.size == (600, 200)
    await remembered_renders(redis_url, "hero", ["u1"])
    assert await click_target(client, signed("/c/hero?r=u1")) == "https://shop.example.com/cart"

    purchase = {"recipient": "u1", "type": "purchase", "props": {"amount": 20}}
    assert (await client.post("/api/v1/events", json=purchase, headers=AUTH)).status == 202
    variant, thanks_image = await open_image(client, signed("/i/hero.png?r=u1"))
    assert variant == "thanks"
    assert ImageChops.difference(cart_image.convert("RGB"), thanks_image.convert("RGB")).getbbox()
    # The click follows what the image showed last.
    for _ in range(500):
        target = await click_target(client, signed("/c/hero?r=u1"))
        if target == "https://shop.example.com/orders":
            break
        await asyncio.sleep(0.02)
    assert target == "https://shop.example.com/orders"


async def test_image_headers_follow_the_contract(client: TestClient[Any, Any]) -> None:
    await put_block(client, "hero", CART_REMINDER)
    response = await client.get(signed("/i/hero.png?r=nobody"))
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Cache-Control"] == NO_CACHE
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Expires"] == "0"
    assert "ETag" not in response.headers
    assert "Last-Modified" not in response.headers
    assert response.headers["X-Atopen-Variant"] == "default"
    assert response.headers["X-Request-Id"]


async def test_each_request_gets_its_own_id_unless_the_caller_sent_one(
    client: TestClient[Any, Any],
) -> None:
    ids = [(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    sent = await client.get("/healthz", headers={"X-Request-Id": "esp-7f3a"})
    assert sent.headers["X-Request-Id"] == "esp-7f3a"


async def test_every_format_and_scale_has_the_exact_size(client: TestClient[Any, Any]) -> None:
    await put_block(client, "hero", CART_REMINDER)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    await client.post("/api/v1/events", json={"recipient": "u1", "type": "purchase"}, headers=AUTH)
    for ext, pil_format in (("png", "PNG"), ("jpg", "JPEG"), ("gif", "GIF")):
        for dpr in (1, 2, 3):
            response = await client.get(signed(f"/i/hero.{ext}?r=u1&dpr={dpr}"))
            assert response.headers["X-Atopen-Variant"] == "thanks"
            image = decode(await response.read())
            assert image.format == pil_format
            assert image.size == (600 * dpr, 200 * dpr)


async def test_text_pixels_change_with_the_recipient(client: TestClient[Any, Any]) -> None:
    await put_block(client, "greet", greeting())
    for rid, name in (("u1", "Ann"), ("u2", "Bartholomew")):
        await client.put(f"/api/v1/profiles/{rid}", json={"first_name": name}, headers=AUTH)
    _, ann = await open_image(client, signed("/i/greet.png?r=u1"))
    _, bart = await open_image(client, signed("/i/greet.png?r=u2"))
    changed = ImageChops.difference(ann.convert("RGB"), bart.convert("RGB")).getbbox()
    assert changed is not None
    left, top, right, bottom = changed
    assert left >= 10  # inside the text box
    assert top >= 10
    assert right <= 390
    assert bottom <= 90


async def test_missing_first_name_falls_to_the_default(client: TestClient[Any, Any]) -> None:
    await put_block(client, "greet", greeting())
    await client.put("/api/v1/profiles/u1", json={"last_name": "Nowak"}, headers=AUTH)
    variant, image = await open_image(client, signed("/i/greet.png?r=u1"))
    assert variant == "default"
    await client.put("/api/v1/profiles/u1", json={"first_name": "   "}, headers=AUTH)
    variant, blank_name = await open_image(client, signed("/i/greet.png?r=u1"))
    assert variant == "default"
    assert blank_name.tobytes() == image.tobytes()


async def test_template_default_is_used_when_a_value_is_missing(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "greet", greeting("Hello {{ profile.first_name | default('friend') }}"))
    variant, friend = await open_image(client, signed("/i/greet.png?r=stranger"))
    assert variant == "named"
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    _, ann = await open_image(client, signed("/i/greet.png?r=u1"))
    assert friend.tobytes() != ann.tobytes()


async def test_tampered_url_gets_the_default_and_no_recipient_data(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "hero", CART_REMINDER)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    await client.post("/api/v1/events", json={"recipient": "u1", "type": "purchase"}, headers=AUTH)
    good = signed("/i/hero.png?r=u1")
    assert (await open_image(client, good))[0] == "thanks"
    _, default_image = await open_image(client, signed("/i/hero.png?r=nobody"))
    tampered = [
        good.replace("r=u1", "r=u2"),
        good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "/i/hero.png?r=u1",
        signed("/i/hero.png?r=u1", secret="another-secret"),
    ]
    for url in tampered:
        variant, image = await open_image(client, url)
        assert variant == "default"
        assert image.tobytes() == default_image.tobytes()
        target = await click_target(client, url.replace("/i/hero.png", "/c/hero"))
        assert target == "https://shop.example.com/"
    async with aioredis.from_url(redis_url) as store:
        remembered = await store.hgetall(remembered_key("u2"))
    assert remembered == {}


async def test_rotated_secret_still_verifies(make_client: Any, settings: Settings) -> None:
    client = await make_client(replace(settings, secrets=("new-key", "test-secret")))
    await put_block(client, "hero", CART_REMINDER)
    await client.post("/api/v1/events", json={"recipient": "u1", "type": "purchase"}, headers=AUTH)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    assert (await open_image(client, signed("/i/hero.png?r=u1")))[0] == "thanks"
    assert (await open_image(client, signed("/i/hero.png?r=u1", "new-key")))[0] == "thanks"
    assert (await open_image(client, signed("/i/hero.png?r=u1", "retired")))[0] == "default"


async def test_unknown_block_is_a_404_transparent_pixel(client: TestClient[Any, Any]) -> None:
    response = await client.get(signed("/i/nope.png?r=u1"))
    assert response.status == 404
    pixel = decode(await response.read())
    assert pixel.size == (1, 1)
    rgba = pixel.convert("RGBA").getpixel((0, 0))
    assert isinstance(rgba, tuple)
    assert rgba[3] == 0


async def test_public_block_personalizes_without_a_signature(client: TestClient[Any, Any]) -> None:
    block = greeting("Sale ends {{ params.day }}")
    block["public"] = True
    await put_block(client, "sale", block)
    variant, _ = await open_image(client, "/i/sale.png?m.day=Friday")
    assert variant == "named"


async def test_merge_fields_and_time_zone_reach_the_rules(client: TestClient[Any, Any]) -> None:
    block = greeting("{{ params.coupon }}")
    block["variants"][0]["when"] = "now.utcoffset().total_seconds() == 9 * 3600"
    await put_block(client, "zone", block)
    assert (await open_image(client, signed("/i/zone.png?r=u1&m.coupon=X1&tz=Asia/Tokyo")))[
        0
    ] == "named"
    assert (await open_image(client, signed("/i/zone.png?r=u1&m.coupon=X1&tz=UTC")))[0] == "default"
    await client.put("/api/v1/profiles/u1", json={"tz": "Asia/Tokyo"}, headers=AUTH)
    assert (await open_image(client, signed("/i/zone.png?r=u1&m.coupon=X1")))[0] == "named"


async def add_buyer(client: TestClient[Any, Any], recipient: str, name: str) -> None:
    """A recipient with a profile and a purchase (the cart reminder thanks them)."""
    await client.put(f"/api/v1/profiles/{recipient}", json={"first_name": name}, headers=AUTH)
    purchase = {"recipient": recipient, "type": "purchase"}
    await client.post("/api/v1/events", json=purchase, headers=AUTH)


@pytest.mark.slow
async def test_store_stopped_mid_run_still_serves_the_default(
    make_client: Any, own_store: EmbeddedRedis
) -> None:
    client = await make_client(store_url=own_store.url)
    await put_block(client, "hero", CART_REMINDER)
    await add_buyer(client, "u1", "Ann")
    assert (await client.get(signed("/i/hero.png?r=u1"))).headers["X-Atopen-Variant"] == "thanks"
    own_store.stop()
    for ext, dpr in (("png", 1), ("jpg", 2), ("gif", 1)):
        response = await client.get(signed(f"/i/hero.{ext}?r=u1&dpr={dpr}"))
        assert response.status == 200
        assert response.headers["X-Atopen-Variant"] == "default"
        assert decode(await response.read()).size == (600 * dpr, 200 * dpr)
    target = await click_target(client, signed("/c/hero?r=u1"))
    assert target == "https://shop.example.com/"
    assert (await client.get("/readyz")).status == 503


@pytest.mark.slow
async def test_opens_are_drawn_for_their_recipient_again_once_the_store_is_back(
    make_client: Any, tmp_path: Any
) -> None:
    """A store restart drops every connection: the next opens read on new ones."""
    store = EmbeddedRedis(tmp_path / "own-store")
    store.start()
    try:
        client = await make_client(store_url=store.url)
        await put_block(client, "hero", CART_REMINDER)
        await add_buyer(client, "u1", "Ann")
        assert (await open_image(client, signed("/i/hero.png?r=u1")))[0] == "thanks"
        store.stop()
        assert (await open_image(client, signed("/i/hero.png?r=u1&dpr=2")))[0] == "default"
        store.start()
        # Each open is a new recipient's, so no cache can answer: only the store can.
        await add_buyer(client, "u2", "Bo")
        assert (await open_image(client, signed("/i/hero.png?r=u2")))[0] == "thanks"
    finally:
        store.stop()


@pytest.mark.slow
async def test_deadline_overrun_serves_the_default(make_client: Any, settings: Settings) -> None:
    client = await make_client(replace(settings, render_deadline_ms=10))
    await put_block(client, "slow", slow_greeting())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    response = await client.get(signed("/i/slow.png?r=u1&dpr=3"))
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
    assert decode(await response.read()).size == (3600, 3600)


@pytest.mark.slow
async def test_a_stalled_store_answers_the_default_by_the_deadline(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await make_client(replace(settings, render_deadline_ms=100))
    block = greeting()
    block["variants"][0].update(when="profile.vip", layers=[{"type": "fill", "color": "#0b6e4f"}])
    await put_block(client, "vip", block)
    await client.put("/api/v1/profiles/u1", json={"vip": True}, headers=AUTH)
    assert (await client.get(signed("/i/vip.png?r=u1"))).headers["X-Atopen-Variant"] == "named"
    async with aioredis.Redis.from_url(redis_url) as other:
        stall = asyncio.ensure_future(other.eval(BUSY_STORE, 0, 1500))
        await asyncio.sleep(0.1)  # the store is inside the script now
        response = await client.get(signed("/i/vip.png?r=u1"))
        assert response.status == 200
        assert response.headers["X-Atopen-Variant"] == "default"
        assert decode(await response.read()).size == (400, 100)
        await stall
    # The store is back: so are the recipient's data.
    assert (await client.get(signed("/i/vip.png?r=u1"))).headers["X-Atopen-Variant"] == "named"


async def test_click_without_memory_uses_the_variant_that_would_render_now(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "hero", CART_REMINDER)
    await client.post(
        "/api/v1/events",
        json={"recipient": "u9", "type": "cart_abandoned", "props": {"item": "Hat"}},
        headers=AUTH,
    )
    await client.put("/api/v1/profiles/u9", json={"first_name": "Ann"}, headers=AUTH)
    assert await click_target(client, signed("/c/hero?r=u9")) == "https://shop.example.com/cart"


async def test_click_to_a_host_the_block_does_not_name_goes_to_the_default(
    client: TestClient[Any, Any],
) -> None:
    block = greeting()
    block["variants"][0]["link"] = "{{ params.next }}"
    await put_block(client, "redirect", block)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    allowed = signed("/c/redirect?r=u1&m.next=https://shop.example.com/x")
    assert await click_target(client, allowed) == "https://shop.example.com/x"
    for target in ("https://evil.example.net/", "javascript:alert(1)", "//evil.example.net"):
        url = signed(f"/c/redirect?r=u1&m.next={target}")
        assert await click_target(client, url) == "https://shop.example.com/"


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"store": "ok", "blocks": "ok"}


async def test_any_other_image_path_is_the_404_pixel(client: TestClient[Any, Any]) -> None:
    await put_block(client, "hero", CART_REMINDER)
    for path in ("/i/hero.webp", "/i/hero", "/i/a/b.png"):
        response = await client.get(path)
        assert response.status == 404
        assert decode(await response.read()).size == (1, 1)


async def test_membership_test_fetches_the_item(client: TestClient[Any, Any]) -> None:
    block = greeting("{{ params.sku }} is here")
    block["variants"][0]["when"] = "params.sku in inventory"
    await put_block(client, "member", block)
    url = signed("/i/member.png?r=u1&m.sku=sku-7")
    assert (await open_image(client, url))[0] == "default"
    await client.put("/api/v1/inventory/sku-7", json={"stock": 1}, headers=AUTH)
    assert (await open_image(client, url))[0] == "named"


@pytest.mark.parametrize("path", ["/i/a%0Ab", "/i/a%0Db.png", "/i/%0A", "/i/x/y.gif"])
async def test_any_unknown_image_path_gets_the_404_pixel(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert response.content_type == "image/gif"
    assert decode(await response.read()).size == (1, 1)
