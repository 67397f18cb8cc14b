"""However many readers click at once, a process opens no more than
`ATOPEN_REDIS_MAX_CONNECTIONS` connections to the store: the clicks past that wait for a
connection of the pool, and each still goes to its reader's page."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from sample_blocks import greeting
from support import put_block, signed

from content_sources.redis_keys import profile_key
from server.settings import Settings

CLICKS = 300


async def connected_clients(store: aioredis.Redis) -> int:
    info = await store.info("clients")
    return int(info["connected_clients"])


async def test_a_click_storm_opens_at_most_the_pools_connections(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    limited = dataclasses.replace(settings, redis_max_connections=8)
    client = await make_client(limited)
    await put_block(client, "names", greeting())
    store = aioredis.Redis.from_url(redis_url)
    await store.mset(
        {profile_key(f"u{i}"): orjson.dumps({"first_name": f"U{i}"}) for i in range(CLICKS)}
    )
    peak = 0
    clicking = True

    async def watch() -> None:
        nonlocal peak
        while clicking:
            peak = max(peak, await connected_clients(store))
            await asyncio.sleep(0.001)

    before = await connected_clients(store)
    watcher = asyncio.create_task(watch())
    # Every click at once: aiohttp's client would send at most 100 at a time by default.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def click(i: int) -> tuple[int, str]:
            url = client.make_url(signed(f"/c/names?r=u{i}"))
            async with session.get(url, allow_redirects=False) as response:
                return response.status, response.headers["Location"]

        answers = await asyncio.gather(*(click(i) for i in range(CLICKS)))
    clicking = False
    await watcher
    await store.aclose()
    assert answers == [(302, "https://shop.example.com/named")] * CLICKS
    # The pool's connections, the opens' own and the watcher's: not one per click.
    assert peak - before <= 8 + 1, (before, peak)
