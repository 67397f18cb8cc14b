"""Rules a marketer writes, end to end: segments of behaviour, live stock, experiments."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from sample_blocks import greeting
from support import AUTH, put_block, signed

from content_sources.redis_keys import remembered_key
from server.blocks.experiments import Split, assign


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def variant(client: Any, url: str) -> str:
    response = await client.get(signed(url))
    assert response.status == 200
    return str(response.headers["X-Atopen-Variant"])


async def post_event(client: Any, **event: Any) -> None:
    assert (await client.post("/api/v1/events", json=event, headers=AUTH)).status == 202


async def test_rating_request_skips_recipients_with_an_open_ticket(client: Any) -> None:
    block = greeting("How did we do, {{ profile.first_name }}?")
    block["variants"][0]["when"] = (
        "events.count('support_ticket') == 0"
        " or events.last('support_ticket').props.status == 'closed'"
    )
    await put_block(client, "rate-us", block)
    for rid in ("calm", "angry", "resolved"):
        await client.put(f"/api/v1/profiles/{rid}", json={"first_name": rid}, headers=AUTH)
    await post_event(client, recipient="angry", type="support_ticket", props={"status": "open"})
    await post_event(
        client,
        recipient="resolved",
        type="support_ticket",
        ts=ago(days=2),
        props={"status": "open"},
    )
    await post_event(
        client, recipient="resolved", type="support_ticket", props={"status": "closed"}
    )
    assert await variant(client, "/i/rate-us.png?r=calm") == "named"
    assert await variant(client, "/i/rate-us.png?r=angry") == "default"
    assert await variant(client, "/i/rate-us.png?r=resolved") == "named"


async def test_welcome_shows_only_in_the_first_week(client: Any) -> None:
    block = greeting("Welcome, {{ profile.first_name }}!")
    block["variants"][0]["when"] = "events.within('signup', days=7)"
    await put_block(client, "welcome", block)
    for rid, days in (("fresh", 1), ("settled", 8)):
        await client.put(f"/api/v1/profiles/{rid}", json={"first_name": rid}, headers=AUTH)
        await post_event(client, recipient=rid, type="signup", ts=ago(days=days))
    assert await variant(client, "/i/welcome.png?r=fresh") == "named"
    assert await variant(client, "/i/welcome.png?r=settled") == "default"
    assert await variant(client, "/i/welcome.png?r=never") == "default"


async def test_out_of_stock_products_are_replaced_by_the_next_in_stock(client: Any) -> None:
    block = greeting(
        "{% for item in inventory.first_available(['p1', 'p2', 'p3', 'p4'], n=2) %}"
        "{{ item.name }} {% endfor %}"
    )
    first = "inventory.first_available(['p1', 'p2', 'p3', 'p4'])[0].sku"
    block["variants"][0]["link"] = "https://shop.example.com/p/{{ " + first + " }}"
    await put_block(client, "picks", block)
    items = [
        {"sku": "p1", "name": "Boots", "stock": 0},
        {"sku": "p2", "name": "Scarf", "stock": 4},
        {"sku": "p3", "name": "Hat", "stock": 1},
        {"sku": "p4", "name": "Gloves", "stock": 9},
    ]
    assert (await client.post("/api/v1/inventory", json=items, headers=AUTH)).status == 200
    preview = await client.post(
        "/api/v1/blocks/picks/preview",
        json={"recipient": "u1"},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert (await preview.json())["link"] == "https://shop.example.com/p/p2"
    for sku in ("p2", "p3", "p4"):
        await client.patch(f"/api/v1/inventory/{sku}", json={"stock": 0}, headers=AUTH)
    # Nothing is buyable any more: the block falls back to its default.
    assert await variant(client, "/i/picks.png?r=u1") == "default"
    await client.patch("/api/v1/inventory/p4", json={"stock": 2}, headers=AUTH)
    preview = await client.post(
        "/api/v1/blocks/picks/preview",
        json={"recipient": "u1"},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert (await preview.json())["link"] == "https://shop.example.com/p/p4"


def test_arms_are_stable_and_follow_the_weights() -> None:
    split = Split({"a": 3, "b": 1}, holdout_percent=10)
    arms = Counter(split.arm("promo", f"r{i}") for i in range(20_000))
    assert [split.arm("promo", "r7") for _ in range(5)] == [split.arm("promo", "r7")] * 5
    assert arms[None] / 20_000 == pytest.approx(0.10, abs=0.01)
    assert arms["a"] / (arms["a"] + arms["b"]) == pytest.approx(0.75, abs=0.02)
    # Another block shuffles recipients differently.
    assert [split.arm("promo", f"r{i}") for i in range(50)] != [
        split.arm("other", f"r{i}") for i in range(50)
    ]


def test_an_unknown_recipient_gets_no_arm() -> None:
    assignment = assign(Split({"a": 1, "b": 1}), "promo", None)
    assert assignment.excluded == {"a", "b"}


def experiment_block() -> dict[str, Any]:
    block = greeting()
    arm = block["variants"][0]
    block["variants"] = [
        {**arm, "name": "coupon-a", "when": "true"},
        {**arm, "name": "coupon-b", "when": "true"},
    ]
    block["split"] = {"weights": {"coupon-a": 1, "coupon-b": 1}, "holdout": 20}
    return block


async def test_each_recipient_keeps_their_arm_and_the_holdout_sees_the_default(
    client: Any,
) -> None:
    await put_block(client, "ab", experiment_block())
    split = Split({"coupon-a": 1, "coupon-b": 1}, 20)
    seen: Counter[str] = Counter()
    for i in range(30):
        rid = f"r{i}"
        await client.put(f"/api/v1/profiles/{rid}", json={"first_name": rid}, headers=AUTH)
        expected = split.arm("ab", rid) or "default"
        got = {await variant(client, f"/i/ab.png?r={rid}") for _ in range(3)}
        assert got == {expected}
        seen[expected] += 1
    assert set(seen) == {"coupon-a", "coupon-b", "default"}
    holdout = next(f"r{i}" for i in range(30) if split.arm("ab", f"r{i}") is None)
    trace = await client.post(
        "/api/v1/blocks/ab/preview",
        json={"recipient": holdout},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert (await trace.json())["trace"][-1]["reason"] == "experiment holdout"


async def test_a_bad_split_is_rejected_naming_the_field(client: Any) -> None:
    block = experiment_block()
    block["split"] = {"weights": {"coupon-c": 1}, "holdout": 120}
    response = await client.put("/api/v1/blocks/ab", json=block, headers=AUTH)
    assert response.status == 422
    fields = {d["field"] for d in (await response.json())["error"]["details"]}
    assert fields == {"split.weights.coupon-c", "split.holdout"}


@pytest.mark.parametrize(
    ("weight", "accepted"),
    [(50.0, True), (50.5, False), (True, False), (0, False), (10**400, False), ("50", False)],
)
async def test_split_weights_are_whole_numbers_however_json_writes_them(
    client: Any, weight: object, accepted: bool
) -> None:
    block = experiment_block()
    block["split"]["weights"] = {name: weight for name in block["split"]["weights"]}
    response = await client.put("/api/v1/blocks/ab", json=block, headers=AUTH)
    assert response.status == (201 if accepted else 422), await response.text()
    if accepted:  # stored as sent, and served
        assert (await response.json())["definition"]["split"]["weights"]["coupon-a"] == 50.0
        assert (await client.get(signed("/i/ab.png?r=u1"))).status == 200


async def test_a_sticky_block_keeps_the_first_variant(client: Any, redis_url: str) -> None:
    block = greeting("Your code: {{ params.code }}")
    block["variants"][0]["when"] = "inventory['coupons'].stock > 0"
    block["variants"].append({**block["variants"][0], "name": "sold-out", "when": "true"})
    block["reopen"] = "sticky"
    await put_block(client, "coupon", block)
    await client.put("/api/v1/inventory/coupons", json={"stock": 1}, headers=AUTH)
    url = "/i/coupon.png?r=u1&m.code=X1"
    assert await variant(client, url) == "named"
    async with aioredis.from_url(redis_url) as store:
        for _ in range(500):  # the first render is remembered off the response path
            if await store.hexists(remembered_key("u1"), "coupon"):
                break
            await asyncio.sleep(0.02)
    await client.patch("/api/v1/inventory/coupons", json={"stock": 0}, headers=AUTH)
    assert await variant(client, url) == "named"
    assert await variant(client, "/i/coupon.png?r=u2&m.code=X2") == "sold-out"
    fresh = {**block, "reopen": "fresh"}
    await put_block(client, "coupon", fresh)
    assert await variant(client, url) == "sold-out"


async def test_preview_as_a_gmail_open_from_a_place(client: Any) -> None:
    block = greeting("Rain in {{ geo.city }}?")
    block["variants"][0]["when"] = "client.is_proxy and geo.country == 'PT'"
    await put_block(client, "place", block)
    answer = await client.post(
        "/api/v1/blocks/place/preview",
        json={
            "recipient": "u1",
            "client": {"kind": "gmail_proxy"},
            "location": {"country": "PT", "city": "Lisbon"},
        },
        headers={**AUTH, "Accept": "application/json"},
    )
    assert (await answer.json())["variant"] == "named"
    bad = await client.post(
        "/api/v1/blocks/place/preview", json={"location": {"lat": 200}}, headers=AUTH
    )
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "location.lat"
