"""Location and stores through real opens: the client address, the proxy policy, the
last seen location and the nearest store, from the HTTP request to the variant served."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from support import AUTH, CITY_DB, put_block, signed

from content_sources.client_address import parse_trusted_proxies
from content_sources.redis_keys import last_seen_key
from server.settings import Settings
from server.web.app import TEMPLATES_DIR

Client = TestClient[Any, Any]
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML)"
MILTON_IP = "216.160.83.56"  # Milton, WA in the test database
WARSAW = {"city": "Warsaw", "country": "PL", "lat": 52.2297, "lon": 21.0122}

WHERE = {
    "width": 200,
    "height": 50,
    "variants": [
        {
            "name": name,
            "when": f"geo.city == '{city}'",
            "layers": [{"type": "fill", "color": "#fff"}],
        }
        for name, city in (("warsaw", "Warsaw"), ("milton", "Milton"))
    ],
    "default": {"layers": [{"type": "fill", "color": "#000"}], "link": "https://shop.example.com/"},
}


@pytest.fixture
async def located(make_client: Any, settings: Settings) -> Client:
    """The app with the test City database, behind a proxy at 127.0.0.1 that it trusts."""
    trusted = parse_trusted_proxies("127.0.0.1")
    client: Client = await make_client(replace(settings, geoip_db=CITY_DB, trusted_proxies=trusted))
    await put_block(client, "where", WHERE)
    return client


async def variant(client: Client, path: str, user_agent: str, forwarded: str | None) -> str:
    headers = {"User-Agent": user_agent}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = await client.get(signed(path), headers=headers)
    assert response.status == 200
    return response.headers["X-Atopen-Variant"]


async def test_a_gmail_open_uses_the_profiles_city_not_googles(located: Client) -> None:
    assert (await located.put("/api/v1/profiles/u1", json=WARSAW, headers=AUTH)).status == 200
    assert await variant(located, "/i/where.png?r=u1", GMAIL, MILTON_IP) == "warsaw"
    assert await variant(located, "/i/where.png?r=u1", BROWSER, MILTON_IP) == "milton"


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(replace(settings, geoip_db=CITY_DB))  # trusts no proxy
    await put_block(client, "where", WHERE)
    assert await variant(client, "/i/where.png?r=u1", BROWSER, MILTON_IP) == "default"


async def test_a_real_open_is_remembered_for_the_next_proxy_open(
    located: Client, store: Any
) -> None:
    assert await variant(located, "/i/where.png?r=u1", GMAIL, None) == "default"
    assert await variant(located, "/i/where.png?r=u1", BROWSER, MILTON_IP) == "milton"
    for _ in range(200):  # the open's writes are batched off the response path
        if store.exists(last_seen_key("u1")):
            break
        await asyncio.sleep(0.01)
    assert orjson.loads(store.get(last_seen_key("u1")))["city"] == "Milton"
    assert await variant(located, "/i/where.png?r=u1", GMAIL, "66.249.93.70") == "milton"
    # Erasing the recipient erases where they were seen.
    assert (await located.delete("/api/v1/profiles/u1", headers=AUTH)).status == 204
    assert not store.exists(last_seen_key("u1"))


async def test_the_nearest_store_block_through_a_gmail_open(located: Client) -> None:
    stores = (TEMPLATES_DIR / "demo" / "stores.json").read_bytes()
    assert (await located.post("/api/v1/stores", data=stores, headers=AUTH)).status == 200
    block = orjson.loads((TEMPLATES_DIR / "blocks" / "nearest-store.json").read_bytes())
    await put_block(located, "nearest-store", block)
    assert (await located.put("/api/v1/profiles/u1", json=WARSAW, headers=AUTH)).status == 200
    path = "/i/nearest-store.png?r=u1"
    assert await variant(located, path, GMAIL, MILTON_IP) == "nearest"
    click = await located.get(signed("/c/nearest-store?r=u1"), allow_redirects=False)
    assert click.headers["Location"] == "https://shop.example.com/stores/warsaw-centrum"
    assert await variant(located, "/i/nearest-store.png?r=u2", GMAIL, MILTON_IP) == "default"
