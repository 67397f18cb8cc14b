"""Where recipient data may flow: a public block's unsigned opens read and write none of
it, and an erased recipient is not brought back by the writes of earlier opens."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from aiohttp.test_utils import TestClient
from support import AUTH, decode, put_block, signed

from content_sources.redis_keys import recipient_keys, remembered_key
from server.api.app_state import OPEN_LOG

Client = TestClient[Any, Any]
FILL = {"type": "fill", "color": "#202020"}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "box": [4, 4, 312, 72], "text": text, "size": 20, "color": "#ffffff"}


# A public block (its opens need no signature) whose first variants read personal data.
PUBLIC = {
    "width": 320,
    "height": 80,
    "public": True,
    "variants": [
        {
            "name": "buyer",
            "when": "events.within('purchase', days=1)",
            "layers": [FILL, _text("Thanks again")],
            "link": "https://shop.example.com/buyer",
        },
        {
            "name": "named",
            "layers": [FILL, _text("Hello {{ profile.first_name }}")],
            "link": "https://shop.example.com/named",
        },
        {
            "name": "merge_field",
            "layers": [FILL, _text("Hello {{ params.name }}")],
            "link": "https://shop.example.com/merge",
        },
    ],
    "default": {"layers": [FILL, _text("Hello")], "link": "https://shop.example.com/"},
}


async def _variant(client: Client, url: str) -> str:
    response = await client.get(url)
    assert response.status == 200
    assert decode(await response.read()).size == (320, 80)
    variant: str = response.headers["X-Atopen-Variant"]
    return variant


async def _queued_writes_landed(client: Client) -> None:
    await client.app[OPEN_LOG].flush()


async def _with_personal_data(client: Client, rid: str) -> None:
    await put_block(client, "pub", PUBLIC)
    profile = await client.put(f"/api/v1/profiles/{rid}", json={"first_name": "Ann"}, headers=AUTH)
    assert profile.status == 200


async def test_unsigned_open_of_a_public_block_reads_no_profile(client: Client) -> None:
    await _with_personal_data(client, "u1")
    assert await _variant(client, "/i/pub.png?r=u1") == "default"
    # The URL's own fields still personalise it: that is what a public block is for.
    assert await _variant(client, "/i/pub.png?r=u1&m.name=Bo") == "merge_field"
    # Signed, the same open is the recipient's.
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "named"


async def test_unsigned_open_of_a_public_block_reads_no_events(client: Client) -> None:
    await _with_personal_data(client, "u1")
    event = {"recipient": "u1", "type": "purchase"}
    assert (await client.post("/api/v1/events", json=event, headers=AUTH)).status == 202
    assert await _variant(client, "/i/pub.png?r=u1") == "default"
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "buyer"


async def test_unsigned_open_of_a_public_block_writes_nothing_for_its_r(
    client: Client, store: redis.Redis
) -> None:
    await put_block(client, "pub", PUBLIC)
    assert await _variant(client, "/i/pub.png?r=victim&m.name=Eve") == "merge_field"
    await _queued_writes_landed(client)
    assert [key for key in recipient_keys("victim") if store.exists(key)] == []
    # A signed open is remembered as before.
    await _variant(client, signed("/i/pub.png?r=u2&m.name=Bo"))
    await _queued_writes_landed(client)
    assert store.exists(remembered_key("u2")) == 1


async def test_unsigned_click_of_a_public_block_follows_no_memory(client: Client) -> None:
    await _with_personal_data(client, "u1")
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "named"
    await _queued_writes_landed(client)
    remembered = await client.get(signed("/c/pub?r=u1"), allow_redirects=False)
    assert remembered.headers["Location"] == "https://shop.example.com/named"
    unsigned = await client.get("/c/pub?r=u1", allow_redirects=False)
    assert unsigned.status == 302
    assert unsigned.headers["Location"] == "https://shop.example.com/"
    with_field = await client.get("/c/pub?r=u1&m.name=Bo", allow_redirects=False)
    assert with_field.headers["Location"] == "https://shop.example.com/merge"


async def test_an_erasure_is_not_undone_by_the_writes_of_earlier_opens(
    client: Client, store: redis.Redis
) -> None:
    await _with_personal_data(client, "u1")
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "named"
    # Erased while that open's writes may still be queued; they land afterwards.
    assert (await client.delete("/api/v1/profiles/u1", headers=AUTH)).status == 204
    await _queued_writes_landed(client)
    for _ in range(100):
        if not any(store.exists(key) for key in recipient_keys("u1")):
            break
        await asyncio.sleep(0.05)
    assert [key for key in recipient_keys("u1") if store.exists(key)] == []


async def test_an_open_after_an_erasure_finds_nothing_of_before(
    client: Client, store: redis.Redis
) -> None:
    await _with_personal_data(client, "u1")
    event = {"recipient": "u1", "type": "purchase"}
    assert (await client.post("/api/v1/events", json=event, headers=AUTH)).status == 202
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "buyer"
    await _queued_writes_landed(client)
    assert (await client.delete("/api/v1/profiles/u1", headers=AUTH)).status == 204
    # The next open is nobody's in particular: no profile, no events, no memory.
    assert await _variant(client, signed("/i/pub.png?r=u1")) == "default"
    click = await client.get(signed("/c/pub?r=u1"), allow_redirects=False)
    assert click.headers["Location"] == "https://shop.example.com/"
    await _queued_writes_landed(client)
    assert store.exists(*recipient_keys("u1")[:3]) == 0  # profile, events, their ids
    profile = await client.get("/api/v1/profiles/u1", headers=AUTH)
    assert profile.status == 404


async def test_unsigned_opens_of_a_shared_public_block_take_the_shared_choice_as_nobody(
    client: Client, store: redis.Redis
) -> None:
    """A block whose rules read only shared data: its choice holds for every open, so
    unsigned opens of it answered from memory are still nobody's."""
    block = {
        "width": 320,
        "height": 80,
        "public": True,
        "variants": [
            {
                "name": "in_stock",
                "when": "inventory['sku-1'].stock > 0",
                "layers": [FILL, _text("In stock")],
                "link": "https://shop.example.com/buy",
            }
        ],
        "default": {"layers": [FILL, _text("Soon")], "link": "https://shop.example.com/"},
    }
    item = await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    assert item.status == 200
    await put_block(client, "stock", block)
    for _ in range(3):  # the first decides, the next are answered from memory
        assert await _variant(client, "/i/stock.png?r=victim") == "in_stock"
    await _queued_writes_landed(client)
    assert [key for key in recipient_keys("victim") if store.exists(key)] == []
