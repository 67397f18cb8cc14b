"""Recipient tokens (contract section 8): `POST /api/v1/tokens`, and opens that carry
`r` and `t` instead of a URL signature."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp.test_utils import TestClient
from sample_blocks import one_variant_block
from support import AUTH, SECRET, contract_token, put_block, signed

from server.settings import Settings

Client = TestClient[Any, Any]


def coupon_block() -> dict[str, Any]:
    """Greets a reader by name when the URL's `m.coupon` is SPRING."""
    return one_variant_block(
        "named",
        "params.coupon == 'SPRING'",
        "{{ profile.first_name }}",
        "https://shop.example.com/you",
        width=200,
        height=60,
    )


async def tokens(client: Client, recipients: list[Any]) -> Any:
    response = await client.post("/api/v1/tokens", json={"recipients": recipients}, headers=AUTH)
    return response.status, await response.json()


async def variant(client: Client, query: str) -> str:
    response = await client.get(f"/i/coupons.png?{query}")
    assert response.status == 200
    return str(response.headers["X-Atopen-Variant"])


async def test_tokens_follow_the_contract_formula(client: Client) -> None:
    status, body = await tokens(client, ["u1", "Zoë 2", "u1"])
    assert status == 200
    assert body == {"tokens": {r: contract_token(SECRET, r) for r in ("u1", "Zoë 2")}}


async def test_a_token_personalises_without_a_signature(client: Client) -> None:
    await put_block(client, "coupons", coupon_block())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    _, body = await tokens(client, ["u1", "u2"])
    t1, t2 = body["tokens"]["u1"], body["tokens"]["u2"]

    # The merge field is visible to the rules (not authenticated: anyone may change it).
    assert await variant(client, f"r=u1&t={t1}&m.coupon=SPRING") == "named"
    assert await variant(client, f"r=u1&t={t1}&m.coupon=OTHER") == "default"
    # Another recipient's token, a wrong one, none, or two: an unsigned open.
    for query in (
        f"r=u1&t={t2}&m.coupon=SPRING",
        f"r=u1&t={t1[:-1]}A&m.coupon=SPRING",
        "r=u1&m.coupon=SPRING",
        f"r=u1&t={t1}&t={t1}&m.coupon=SPRING",
        f"r=u1&r=u2&t={t1}&m.coupon=SPRING",
    ):
        assert await variant(client, query) == "default", query
    # A URL signature keeps working beside tokens.
    assert (
        await variant(client, signed("/i/coupons.png?r=u1&m.coupon=SPRING").split("?")[1])
        == "named"
    )

    click = await client.get(f"/c/coupons?r=u1&t={t1}&m.coupon=SPRING", allow_redirects=False)
    assert click.headers["Location"] == "https://shop.example.com/you"
    click = await client.get(f"/c/coupons?r=u1&t={t2}&m.coupon=SPRING", allow_redirects=False)
    assert click.headers["Location"] == "https://shop.example.com/"


async def test_tokens_of_an_older_key_still_open(make_client: Any, settings: Settings) -> None:
    rotated = dataclasses.replace(settings, secrets=("new-key", SECRET))
    client = await make_client(rotated)
    await put_block(client, "coupons", coupon_block())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    _, body = await tokens(client, ["u1"])
    assert body["tokens"]["u1"] == contract_token("new-key", "u1")
    old = contract_token(SECRET, "u1")
    assert await variant(client, f"r=u1&t={old}&m.coupon=SPRING") == "named"


async def test_bad_bodies_name_the_field(client: Client) -> None:
    for body, field in (
        ({}, "recipients"),
        ({"recipients": "u1"}, "recipients"),
        ({"recipients": []}, "recipients"),
        ({"recipients": ["u" + str(i) for i in range(10_001)]}, "recipients"),
        ({"recipients": ["u1", "ann@example.com"]}, "recipients[1]"),
        ({"recipients": ["u1", 7]}, "recipients[1]"),
        ({"recipients": [""]}, "recipients[0]"),
    ):
        response = await client.post("/api/v1/tokens", json=body, headers=AUTH)
        assert response.status == 422, body
        details = (await response.json())["error"]["details"]
        assert [d["field"] for d in details] == [field]
    response = await client.post("/api/v1/tokens", json={"recipients": ["u1"]})
    assert response.status == 401
