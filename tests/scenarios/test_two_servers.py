"""Two atopen servers on one store are one service: render servers keep no state.

Each server is a real `atopen serve` process with its own port, snapshot of blocks and
caches, and both use the same store (here one Redis; `make test-cluster` runs these
tests again on a Redis Cluster). Whichever server a reader's mail client reaches, the
open gets the same image; a block written through either is served by both from the
write's answer on; and an image one server rendered for many readers is not rendered
again by the other.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sample_blocks import CART_REMINDER, IN_STOCK, greeting
from support import AUTH, decode, signed
from test_workers import Served, serving

# Slow, left out of `make test-fast`: they start two `atopen serve` processes.
pytestmark = pytest.mark.slow


@pytest.fixture
def two_servers(redis_url: str, tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    with (
        serving(redis_url, tmp_path / "a", 1) as first,
        serving(redis_url, tmp_path / "b", 1) as second,
    ):
        yield first, second


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def api(
    session: aiohttp.ClientSession, server: Served, method: str, path: str, body: Any
) -> int:
    async with session.request(
        method, f"{server.base}/api/v1{path}", json=body, headers=AUTH
    ) as response:
        assert response.status < 300, await response.text()
        return response.status


async def open_image(
    session: aiohttp.ClientSession, server: Served, path: str
) -> tuple[int, str, bytes]:
    async with session.get(server.base + signed(path)) as response:
        body = await response.read()
        if response.status == 200:
            decode(body)  # a whole image
        return response.status, response.headers.get("X-Atopen-Variant", ""), body


async def test_an_open_gets_the_same_image_from_either_server(
    two_servers: tuple[Served, Served], session: aiohttp.ClientSession
) -> None:
    first, second = two_servers
    await api(session, first, "PUT", "/blocks/cart", CART_REMINDER)
    await api(session, second, "PUT", "/profiles/u1", {"first_name": "Ann"})
    event = {"recipient": "u1", "type": "purchase"}
    await api(session, first, "POST", "/events", event)
    on_first = await open_image(session, first, "/i/cart.png?r=u1")
    on_second = await open_image(session, second, "/i/cart.png?r=u1")
    assert on_first[:2] == (200, "thanks")
    assert on_second == on_first
    # The click follows what was shown, whichever server shows and whichever is clicked.
    async with session.get(second.base + signed("/c/cart?r=u1"), allow_redirects=False) as click:
        assert click.headers["Location"] == "https://shop.example.com/orders"


async def test_a_block_written_through_one_server_is_served_by_the_other_at_once(
    two_servers: tuple[Served, Served], session: aiohttp.ClientSession
) -> None:
    first, second = two_servers
    await api(session, first, "PUT", "/profiles/u1", {"first_name": "Ann"})
    for n in range(3):
        block = greeting()
        block["variants"][0]["name"] = f"version-{n}"
        writer, reader = (first, second) if n % 2 == 0 else (second, first)
        await api(session, writer, "PUT", "/blocks/hello", block)
        # The write answered: the very next open on the other server has it.
        status, variant, _ = await open_image(session, reader, "/i/hello.png?r=u1")
        assert (status, variant) == (200, f"version-{n}")
    await api(session, second, "DELETE", "/blocks/hello", None)
    status, _, _ = await open_image(session, first, "/i/hello.png?r=u1")
    assert status == 404


async def cache_lookups(session: aiohttp.ClientSession, server: Served) -> dict[str, float]:
    """The server's render cache lookups in the shared tier, by result."""
    async with session.get(f"{server.metrics_base}/metrics", headers=AUTH) as response:
        text = await response.text()
    pattern = r'atopen_cache_total\{result="(\w+)",tier="redis"\} ([0-9.e+]+)'
    found = {result: float(n) for result, n in re.findall(pattern, text)}
    pattern = r'atopen_cache_total\{tier="redis",result="(\w+)"\} ([0-9.e+]+)'
    found.update({result: float(n) for result, n in re.findall(pattern, text)})
    return found


async def until_counted(
    session: aiohttp.ClientSession, server: Served, result: str
) -> dict[str, float]:
    """The server's lookups once `result` shows (its counts are written every second)."""
    deadline = time.monotonic() + 10
    while True:
        lookups = await cache_lookups(session, server)
        if lookups.get(result) or time.monotonic() > deadline:
            return lookups
        await asyncio.sleep(0.2)


async def test_an_image_rendered_by_one_server_is_not_rendered_again_by_the_other(
    two_servers: tuple[Served, Served], session: aiohttp.ClientSession
) -> None:
    first, second = two_servers
    await api(session, first, "PUT", "/inventory/sku-1", {"stock": 2, "name": "Red scarf"})
    await api(session, first, "PUT", "/blocks/scarf", IN_STOCK)
    status, variant, rendered = await open_image(session, first, "/i/scarf.png?r=u1")
    assert (status, variant) == (200, "in-stock")
    assert (await until_counted(session, first, "miss")).get("miss") == 1

    status, variant, served = await open_image(session, second, "/i/scarf.png?r=u2")
    assert (status, variant, served) == (200, "in-stock", rendered)
    # The second server found the first one's render in the store: no render of its own.
    assert await until_counted(session, second, "hit") == {"hit": 1}
