"""`/api/v1/profiles/{rid}`: put, merge-patch, read, and erase everything about a recipient."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import AUTH, data_keys, put_block, signed

from content_sources.redis_keys import (
    engagement_key,
    event_ids_key,
    events_key,
    last_click_key,
    last_seen_key,
    poll_votes_key,
    profile_key,
    recipient_keys,
    remembered_key,
    rfm_key,
)

Client = TestClient[Any, Any]
PATH = "/api/v1/profiles/{}"


async def put(client: Client, rid: str, body: Any) -> Any:
    return await client.put(PATH.format(rid), json=body, headers=AUTH)


async def patch(client: Client, rid: str, body: Any) -> Any:
    return await client.patch(PATH.format(rid), json=body, headers=AUTH)


async def get(client: Client, rid: str) -> Any:
    return await client.get(PATH.format(rid), headers=AUTH)


def stored(store: redis.Redis, rid: str) -> Any:
    raw = store.get(profile_key(rid))
    return None if raw is None else orjson.loads(raw)


def bad_fields(payload: Any) -> list[str]:
    assert payload["error"]["code"] == "invalid"
    return [d["field"] for d in payload["error"]["details"]]


async def test_put_then_get_returns_the_profile(client: Client, store: redis.Redis) -> None:
    response = await put(client, "u1", {"first_name": "Ann", "tz": "Europe/Warsaw", "n": 3})
    assert response.status == 200
    expected = {"first_name": "Ann", "tz": "Europe/Warsaw", "n": 3}
    assert await response.json() == {"recipient": "u1", "profile": expected}
    read = await get(client, "u1")
    assert read.status == 200
    assert await read.json() == {"recipient": "u1", "profile": expected}
    assert stored(store, "u1") == expected


async def test_put_replaces_the_whole_profile(client: Client) -> None:
    await put(client, "u1", {"first_name": "Ann", "city": "Oslo"})
    await put(client, "u1", {"last_name": "Lee"})
    assert (await (await get(client, "u1")).json())["profile"] == {"last_name": "Lee"}


async def test_put_drops_nulls_at_every_depth(client: Client, store: redis.Redis) -> None:
    body = {"first_name": "Ann", "city": None, "address": {"zip": None, "street": "Main"}}
    response = await put(client, "u1", body)
    expected = {"first_name": "Ann", "address": {"street": "Main"}}
    assert (await response.json())["profile"] == expected
    assert stored(store, "u1") == expected


async def test_patch_merges_nested_objects(client: Client, store: redis.Redis) -> None:
    await put(client, "u1", {"first_name": "Ann", "address": {"city": "Oslo", "zip": "0150"}})
    response = await patch(client, "u1", {"address": {"city": "Bergen"}, "last_name": "Lee"})
    assert response.status == 200
    expected = {
        "first_name": "Ann",
        "last_name": "Lee",
        "address": {"city": "Bergen", "zip": "0150"},
    }
    assert (await response.json())["profile"] == expected
    assert stored(store, "u1") == expected


async def test_patch_null_deletes_a_member(client: Client, store: redis.Redis) -> None:
    await put(
        client, "u1", {"first_name": "Ann", "tags": ["a"], "address": {"city": "Oslo", "zip": "1"}}
    )
    response = await patch(client, "u1", {"tags": None, "address": {"zip": None}})
    expected = {"first_name": "Ann", "address": {"city": "Oslo"}}
    assert (await response.json())["profile"] == expected
    assert stored(store, "u1") == expected


async def test_patch_replaces_arrays_whole(client: Client) -> None:
    await put(client, "u1", {"tags": ["a", "b"]})
    response = await patch(client, "u1", {"tags": ["c"]})
    assert (await response.json())["profile"] == {"tags": ["c"]}


async def test_patch_creates_an_absent_profile(client: Client, store: redis.Redis) -> None:
    response = await patch(client, "u9", {"first_name": "Bo", "gone": None})
    assert response.status == 200
    assert (await response.json())["profile"] == {"first_name": "Bo"}
    assert stored(store, "u9") == {"first_name": "Bo"}


async def test_patch_stores_no_null_that_put_would_drop(client: Client) -> None:
    # "null never gets stored": an object inside an array loses its null members on PUT,
    # and a PATCH setting the same array must not store what PUT would have dropped.
    document = {"orders": [{"sku": "a", "coupon": None}]}
    await put(client, "u1", document)
    after_put = (await (await get(client, "u1")).json())["profile"]
    assert after_put == {"orders": [{"sku": "a"}]}
    await put(client, "u2", {})
    await patch(client, "u2", document)
    after_patch = (await (await get(client, "u2")).json())["profile"]
    assert after_patch == after_put


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", 5, "europe warsaw"])
async def test_put_with_bad_tz_is_422_and_stores_nothing(
    client: Client, store: redis.Redis, tz: Any
) -> None:
    response = await put(client, "new", {"first_name": "Ann", "tz": tz})
    assert response.status == 422
    assert bad_fields(await response.json()) == ["tz"]
    assert stored(store, "new") is None
    assert (await get(client, "new")).status == 404

    await put(client, "u1", {"first_name": "Ann", "tz": "Europe/Warsaw"})
    response = await put(client, "u1", {"first_name": "Bo", "tz": tz})
    assert response.status == 422
    assert stored(store, "u1") == {"first_name": "Ann", "tz": "Europe/Warsaw"}


async def test_patch_with_bad_tz_is_422_and_keeps_the_old_profile(
    client: Client, store: redis.Redis
) -> None:
    await put(client, "u1", {"first_name": "Ann", "tz": "Europe/Warsaw"})
    response = await patch(client, "u1", {"first_name": "Bo", "tz": "Nowhere/Town"})
    assert response.status == 422
    assert bad_fields(await response.json()) == ["tz"]
    assert stored(store, "u1") == {"first_name": "Ann", "tz": "Europe/Warsaw"}

    creating = await patch(client, "u9", {"first_name": "Bo", "tz": "Nowhere/Town"})
    assert creating.status == 422
    assert stored(store, "u9") is None


async def test_patch_can_remove_tz_and_set_a_valid_one(client: Client) -> None:
    await put(client, "u1", {"tz": "Europe/Warsaw"})
    moved = await patch(client, "u1", {"tz": "America/New_York"})
    assert (await moved.json())["profile"] == {"tz": "America/New_York"}
    cleared = await patch(client, "u1", {"tz": None})
    assert (await cleared.json())["profile"] == {}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "GET", "DELETE"])
async def test_email_address_as_recipient_id_is_422(
    client: Client, store: redis.Redis, method: str
) -> None:
    kwargs: dict[str, Any] = {"headers": AUTH}
    if method in ("PUT", "PATCH"):
        kwargs["json"] = {"first_name": "Ann"}
    response = await client.request(method, PATH.format("ann@example.com"), **kwargs)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["rid"]
    assert data_keys(store) == []


async def test_body_must_be_an_object(client: Client, store: redis.Redis) -> None:
    for body in (["first_name"], "Ann", 3):
        response = await put(client, "u1", body)
        assert response.status == 422
        assert bad_fields(await response.json()) == ["body"]
    assert data_keys(store) == []


async def test_get_unknown_profile_is_404(client: Client) -> None:
    response = await get(client, "nobody")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def _remembered_render(client: Client, store: redis.Redis, rid: str) -> None:
    """Open a signed image for `rid` and wait (bounded) for the off-path memory write."""
    response = await client.get(signed(f"/i/greet.png?r={rid}"))
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "named"
    for _ in range(1000):
        if store.exists(remembered_key(rid)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the render for {rid} was never remembered")


async def _populate(client: Client, store: redis.Redis, rid: str) -> None:
    assert (await put(client, rid, {"first_name": "Ann"})).status == 200
    events = [
        {"recipient": rid, "type": "purchase", "id": f"{rid}-order-1"},
        {"recipient": rid, "type": "view"},
    ]
    posted = await client.post("/api/v1/events", json=events, headers=AUTH)
    assert posted.status == 202
    await _remembered_render(client, store, rid)
    # The RFM record appears once segments are computed; give it one to erase.
    store.set(rfm_key(rid), b"{}")
    store.set(last_seen_key(rid), b'{"country": "GB"}')
    # A person's open and click (the test client's User-Agent is a machine's).
    store.zadd(engagement_key(rid), {"o\tgreet\t1": 1})
    store.set(last_click_key(rid), b"0")
    store.hset(poll_votes_key(rid), "greet", "yes")  # a vote in a poll
    for key in recipient_keys(rid):
        assert store.exists(key), key


async def test_delete_erases_profile_events_ids_and_remembered_renders(
    client: Client, store: redis.Redis
) -> None:
    await put_block(client, "greet", greeting())
    await _populate(client, store, "u1")
    await _populate(client, store, "u2")

    response = await client.delete(PATH.format("u1"), headers=AUTH)
    assert response.status == 204
    for key in (profile_key("u1"), events_key("u1"), event_ids_key("u1"), remembered_key("u1")):
        assert not store.exists(key), key
    assert (await get(client, "u1")).status == 404
    # The other recipient keeps everything.
    for key in recipient_keys("u2"):
        assert store.exists(key), key

    # Erased means forgotten: the idempotency key no longer blocks the same event id,
    # and the recipient now gets the anonymous default.
    again = await client.post(
        "/api/v1/events",
        json={"recipient": "u1", "type": "purchase", "id": "u1-order-1"},
        headers=AUTH,
    )
    assert await again.json() == {"received": 1, "stored": 1, "skipped": []}
    image = await client.get(signed("/i/greet.png?r=u1"))
    assert image.headers["X-Atopen-Variant"] == "default"


async def test_delete_of_an_unknown_recipient_succeeds(client: Client) -> None:
    response = await client.delete(PATH.format("nobody"), headers=AUTH)
    assert response.status == 204
