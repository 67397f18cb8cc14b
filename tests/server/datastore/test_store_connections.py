"""However many readers click at once, a process opens no more than
`ATOPEN_REDIS_MAX_CONNECTIONS` connections to the store: the clicks past that wait for a
connection to come free, and each still goes to its reader's page."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from sample_blocks import greeting
from support import AUTH, put_block, signed

from server.settings import Settings

CLICKS = 300
MOST_CONNECTIONS = 8
READERS_PAGE = "https://shop.example.com/named"


async def connected_clients(stores: Sequence[aioredis.Redis]) -> list[int]:
    """How many clients each store (each master of a cluster) has connected now."""
    infos = [await store.info("clients") for store in stores]
    return [int(info["connected_clients"]) for info in infos]


async def click_storm(
    make_client: Callable[[Settings], Awaitable[Any]],
    settings: Settings,
    stores: Sequence[aioredis.Redis],
) -> tuple[list[tuple[int, str]], list[int]]:
    """`CLICKS` readers with profiles click a block at once, on an app that may hold
    `MOST_CONNECTIONS`: each click's status and target, and how many more clients each of
    `stores` had at the most while they did than before."""
    client = await make_client(
        dataclasses.replace(settings, redis_max_connections=MOST_CONNECTIONS)
    )
    await put_block(client, "names", greeting())
    for i in range(CLICKS):
        response = await client.put(
            f"/api/v1/profiles/u{i}", json={"first_name": f"U{i}"}, headers=AUTH
        )
        assert response.status in (200, 201)
    before = await connected_clients(stores)
    peaks = list(before)
    clicking = True

    async def watch() -> None:
        while clicking:
            peaks[:] = map(max, peaks, await connected_clients(stores))
            await asyncio.sleep(0.001)

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
    return answers, [peak - start for peak, start in zip(peaks, before, strict=True)]


async def test_a_click_storm_opens_at_most_the_pools_connections(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    store = aioredis.Redis.from_url(redis_url)
    try:
        answers, added = await click_storm(make_client, settings, [store])
    finally:
        await store.aclose()
    assert answers == [(302, READERS_PAGE)] * CLICKS
    # The pool's connections and the opens' own: not one per click.
    assert added[0] <= MOST_CONNECTIONS + 1, added
