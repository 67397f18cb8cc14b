"""Block changes reach every running process within a second, with no store read per open."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from sample_blocks import greeting
from support import AUTH, put_block, signed

from server.app import create_app
from server.block_store import BLOCKS_KEY, CHANNEL
from server.embedded_store import EmbeddedRedis
from server.settings import Settings

# Pub/sub delivers a change in milliseconds; the periodic resync would take 30 s. The
# bound tells the two apart without making a loaded machine fail the test.
PUBLISHED_WITHIN_S = 10.0


async def wait_for_variant(
    client: Any, url: str, expected: str, within_s: float = PUBLISHED_WITHIN_S
) -> float:
    """Seconds until `client` serves `expected` for `url` (fails after `within_s`)."""
    start = time.monotonic()
    while True:
        variant = (await client.get(url)).headers.get("X-Atopen-Variant")
        elapsed = time.monotonic() - start
        if variant == expected:
            return elapsed
        assert elapsed < within_s, f"still {variant!r} after {elapsed:.2f}s"
        await asyncio.sleep(0.02)


async def wait_for_status(
    client: Any, url: str, status: int, within_s: float = PUBLISHED_WITHIN_S
) -> None:
    start = time.monotonic()
    while (await client.get(url)).status != status:
        assert time.monotonic() - start < within_s
        await asyncio.sleep(0.02)


async def test_a_change_on_one_process_reaches_another(make_client: Any) -> None:
    writer = await make_client()
    reader = await make_client()
    await writer.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    url = signed("/i/promo.png?r=u1")

    await put_block(writer, "promo", greeting())
    await wait_for_variant(reader, url, "named")

    changed = greeting()
    changed["variants"][0]["when"] = "profile.first_name == 'Bob'"
    await put_block(writer, "promo", changed)
    await wait_for_variant(reader, url, "default")
    assert (await reader.get("/api/v1/blocks/promo", headers=AUTH)).status == 200
    body = await (await reader.get("/api/v1/blocks/promo", headers=AUTH)).json()
    assert body["version"] == 2

    assert (await writer.delete("/api/v1/blocks/promo", headers=AUTH)).status == 204
    await wait_for_status(reader, url, 404)


async def test_a_starting_process_loads_stored_blocks(make_client: Any) -> None:
    first = await make_client()
    await put_block(first, "promo", greeting())
    late = await make_client()
    assert (await late.get("/readyz")).status == 200
    response = await late.get(signed("/i/promo.png?r=u1"))
    assert response.status == 200


async def test_a_process_follows_changes_before_it_serves(
    aiohttp_client: Any, settings: Settings, redis_url: str
) -> None:
    """A block changed while a process starts must not be missed: before it accepts a
    connection, the store has its subscription to changes (and it synced after that)."""

    store = aioredis.from_url(redis_url)

    async def subscribers() -> int:
        return int(dict(await store.pubsub_numsub(CHANNEL))[CHANNEL.encode()])

    # The apps of earlier tests unsubscribe as they close, which the store may see a
    # moment later. Waiting for none also connects, so the count below is one round trip.
    deadline = time.monotonic() + PUBLISHED_WITHIN_S
    while await subscribers():
        assert time.monotonic() < deadline, "an earlier app never unsubscribed"
        await asyncio.sleep(0.05)
    app = create_app(settings, redis_url=redis_url)
    when_ready: list[int] = []

    async def record(app: web.Application) -> None:  # runs after the app's own startup
        when_ready.append(await subscribers())

    app.on_startup.append(record)
    try:
        await aiohttp_client(app)
    finally:
        await store.aclose()
    assert when_ready == [1]


async def test_a_stored_block_that_no_longer_compiles_keeps_the_others_serving(
    make_client: Any, redis_url: str
) -> None:
    first = await make_client()
    await put_block(first, "good", greeting())
    async with aioredis.from_url(redis_url) as store:
        record = {
            "version": 1,
            "updated_at": "2026-01-01T00:00:00+00:00",
            "definition": {"width": "wide"},
        }
        await store.hset(BLOCKS_KEY, "broken", orjson.dumps(record))
    late = await make_client()
    assert (await late.get(signed("/i/good.png?r=u1"))).status == 200
    assert (await late.get(signed("/i/broken.png?r=u1"))).status == 404


async def test_a_process_started_without_its_store_catches_up_once_it_answers(
    make_client: Any, tmp_path: Path
) -> None:
    store = EmbeddedRedis(tmp_path / "late-store", persistent=False)
    store.start()
    url = store.url
    store.stop()
    # It starts all the same (not ready), and answers images with what it can.
    late = await make_client(store_url=url)
    assert (await late.get("/readyz")).status == 503
    assert (await late.get(signed("/i/promo.png?r=u1"))).status == 404
    store.start()
    try:
        assert store.url == url
        writer = await make_client(store_url=url)
        await put_block(writer, "promo", greeting())
        # The change feed reconnects (backing off up to 5 s) and loads what it missed.
        await wait_for_status(late, signed("/i/promo.png?r=u1"), 200)
        assert (await late.get("/readyz")).status == 200
    finally:
        store.stop()
