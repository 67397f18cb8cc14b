"""`/api/v1/inventory`: items by SKU, one at a time or in bulk (all or nothing), seen by rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from sample_blocks import IN_STOCK
from support import AUTH, data_keys, put_block, signed

from content_sources.redis_keys import inventory_key

Client = TestClient[Any, Any]
PATH = "/api/v1/inventory/{}"
ITEM = {
    "stock": 3,
    "price": 19.99,
    "name": "Trail shoe",
    "image": "https://cdn.example.com/shoe.png",
    "url": "https://shop.example.com/shoe",
    "color": "red",
}


def stored(store: redis.Redis, sku: str) -> Any:
    raw = store.get(inventory_key(sku))
    return None if raw is None else orjson.loads(raw)


def bad_fields(payload: Any) -> list[str]:
    assert payload["error"]["code"] == "invalid"
    return [d["field"] for d in payload["error"]["details"]]


async def test_put_get_patch_delete_an_item(client: Client, store: redis.Redis) -> None:
    put = await client.put(PATH.format("sku-1"), json=ITEM, headers=AUTH)
    assert put.status == 200
    assert await put.json() == {"sku": "sku-1", "item": ITEM}
    assert stored(store, "sku-1") == ITEM

    got = await client.get(PATH.format("sku-1"), headers=AUTH)
    assert got.status == 200
    assert await got.json() == {"sku": "sku-1", "item": ITEM}

    patched = await client.patch(
        PATH.format("sku-1"), json={"stock": 0, "color": None}, headers=AUTH
    )
    assert patched.status == 200
    expected = {k: v for k, v in ITEM.items() if k != "color"} | {"stock": 0}
    assert (await patched.json())["item"] == expected
    assert stored(store, "sku-1") == expected

    deleted = await client.delete(PATH.format("sku-1"), headers=AUTH)
    assert deleted.status == 204
    assert stored(store, "sku-1") is None
    assert (await client.get(PATH.format("sku-1"), headers=AUTH)).status == 404
    assert (await client.delete(PATH.format("sku-1"), headers=AUTH)).status == 404


async def test_put_drops_nulls(client: Client, store: redis.Redis) -> None:
    response = await client.put(
        PATH.format("sku-1"), json={"stock": 1, "price": None, "name": None}, headers=AUTH
    )
    assert (await response.json())["item"] == {"stock": 1}
    assert stored(store, "sku-1") == {"stock": 1}


async def test_patch_of_an_unknown_sku_is_404_and_creates_nothing(
    client: Client, store: redis.Redis
) -> None:
    response = await client.patch(PATH.format("nope"), json={"stock": 1}, headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    assert data_keys(store) == []


BAD_VALUES = [
    ("stock", -1),
    ("stock", 1.5),
    ("stock", True),
    ("stock", "3"),
    ("price", -0.01),
    ("price", "19.99"),
    ("price", False),
    ("name", 5),
    ("url", ["https://shop.example.com/"]),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
async def test_put_with_a_bad_value_is_422_naming_the_field(
    client: Client, store: redis.Redis, field: str, value: Any
) -> None:
    response = await client.put(PATH.format("sku-1"), json={**ITEM, field: value}, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == [field]
    assert stored(store, "sku-1") is None


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
async def test_patch_with_a_bad_value_keeps_the_item(
    client: Client, store: redis.Redis, field: str, value: Any
) -> None:
    await client.put(PATH.format("sku-1"), json=ITEM, headers=AUTH)
    response = await client.patch(PATH.format("sku-1"), json={field: value}, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == [field]
    assert stored(store, "sku-1") == ITEM


async def test_whole_number_price_and_zero_stock_are_accepted(client: Client) -> None:
    response = await client.put(PATH.format("sku-1"), json={"stock": 0, "price": 20}, headers=AUTH)
    assert response.status == 200
    assert (await response.json())["item"] == {"stock": 0, "price": 20}


@pytest.mark.parametrize("sku", ["with space", "a" * 257])
async def test_bad_sku_in_the_path_is_422(client: Client, store: redis.Redis, sku: str) -> None:
    response = await client.put(PATH.format(sku), json=ITEM, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["sku"]
    assert data_keys(store) == []


async def test_bulk_stores_every_item(client: Client, store: redis.Redis) -> None:
    items = [{"sku": f"sku-{i}", "stock": i, "name": f"Item {i}"} for i in range(5)]
    response = await client.post("/api/v1/inventory", json=items, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"stored": 5}
    for i in range(5):
        got = await client.get(PATH.format(f"sku-{i}"), headers=AUTH)
        assert (await got.json())["item"] == {"stock": i, "name": f"Item {i}"}


async def test_rejected_bulk_stores_nothing(client: Client, store: redis.Redis) -> None:
    items = [
        {"sku": "sku-0", "stock": 1},
        {"sku": "sku-1", "stock": 2},
        {"sku": "sku-2", "stock": -2},
        {"sku": "sku-3", "price": "cheap"},
        {"stock": 1},
        "not an item",
    ]
    response = await client.post("/api/v1/inventory", json=items, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["[2].stock", "[3].price", "[4].sku", "[5]"]
    for sku in ("sku-0", "sku-1"):
        assert (await client.get(PATH.format(sku), headers=AUTH)).status == 404
    assert data_keys(store) == []


@pytest.mark.parametrize("body", [[], {"sku": "sku-1", "stock": 1}])
async def test_bulk_body_must_be_a_non_empty_array(
    client: Client, store: redis.Redis, body: Any
) -> None:
    response = await client.post("/api/v1/inventory", json=body, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["body"]
    assert data_keys(store) == []


async def test_stock_decides_the_variant_on_the_next_open(client: Client) -> None:
    await put_block(client, "stock", IN_STOCK)

    async def variant() -> str:
        response = await client.get(signed("/i/stock.png?r=u1"))
        assert response.status == 200
        return str(response.headers["X-Atopen-Variant"])

    assert await variant() == "default"  # no such item yet
    await client.put(PATH.format("sku-1"), json={"stock": 2, "name": "Shoe"}, headers=AUTH)
    assert await variant() == "in-stock"
    await client.patch(PATH.format("sku-1"), json={"stock": 0}, headers=AUTH)
    assert await variant() == "default"
    await client.post("/api/v1/inventory", json=[{"sku": "sku-1", "stock": 5}], headers=AUTH)
    # Bulk replaces the whole item: without a name the variant's text is missing.
    assert await variant() == "default"
    await client.patch(PATH.format("sku-1"), json={"name": "Shoe"}, headers=AUTH)
    assert await variant() == "in-stock"
