"""The preview's trace names the data a variant missed as the marketer wrote it
(`profile.first_name is missing`), for expressions and templates, nested paths too."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support import AUTH, put_block

JSON = {**AUTH, "Accept": "application/json"}
DEFAULT = {
    "layers": [{"type": "fill", "color": "#222222"}],
    "link": "https://shop.example.com/",
}


def _block(when: str | None = None, text: str = "Hello", link: str | None = None) -> dict[str, Any]:
    variant: dict[str, Any] = {
        "name": "personal",
        "layers": [{"type": "text", "box": [0, 0, 300, 100], "text": text}],
    }
    if when is not None:
        variant["when"] = when
    if link is not None:
        variant["link"] = link
    return {"width": 300, "height": 100, "variants": [variant], "default": DEFAULT}


async def _reason(client: TestClient[Any, Any], block: dict[str, Any]) -> str:
    await put_block(client, "words", block)
    response = await client.post(
        "/api/v1/blocks/words/preview", json={"recipient": "u1"}, headers=JSON
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["variant"] == "default"
    [outcome] = [o for o in body["trace"] if o["variant"] == "personal"]
    assert outcome["chosen"] is False
    reason: str = outcome["reason"]
    return reason


@pytest.mark.parametrize(
    ("block", "words"),
    [
        (_block(text="Hi {{ profile.first_name }}"), "profile.first_name is missing"),
        (_block(when="profile.age > 30"), "profile.age is missing"),
        (_block(text="{{ profile.address.city }}"), "profile.address is missing"),
        (_block(text="{{ profile['first-name'] }}"), "profile['first-name'] is missing"),
        (_block(text="{{ params.coupon | upper }}"), "params.coupon is missing"),
        (_block(when="profile.tier == 'gold'"), "profile.tier is missing"),
        (
            _block(text="{{ inventory[profile.wish_sku].name }}"),
            "profile.wish_sku is missing",
        ),
        (
            _block(link="https://shop.example.com/{{ profile.segment }}"),
            "profile.segment is missing",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_the_trace_names_the_missing_data_as_written(
    client: TestClient[Any, Any], block: dict[str, Any], words: str
) -> None:
    reason = await _reason(client, block)
    assert reason == f"missing value: {words}"
    assert "dict object" not in reason


async def test_a_nested_path_names_the_deepest_part_that_is_there(
    client: TestClient[Any, Any],
) -> None:
    """With `address` stored but no `city` in it, the trace says the city is missing."""
    response = await client.put(
        "/api/v1/profiles/u1", json={"address": {"street": "6th St"}}, headers=AUTH
    )
    assert response.status == 200
    reason = await _reason(client, _block(text="{{ profile.address.city }}"))
    assert reason == "missing value: profile.address.city is missing"


async def test_a_source_that_knows_why_keeps_its_own_words(client: TestClient[Any, Any]) -> None:
    reason = await _reason(client, _block(text="{{ events.last('purchase').props.item }}"))
    assert reason == "missing value: no 'purchase' event"


async def test_what_an_event_lacks_is_named_by_the_call_that_found_it(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post(
        "/api/v1/events", json={"recipient": "u1", "type": "purchase", "props": {}}, headers=AUTH
    )
    assert response.status == 202
    reason = await _reason(client, _block(text="{{ events.last('purchase').props.item }}"))
    assert reason == "missing value: events.last('purchase').props.item is missing"


async def test_a_value_the_recipient_has_is_shown(client: TestClient[Any, Any]) -> None:
    response = await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    assert response.status == 200
    await put_block(client, "words", _block(text="Hi {{ profile.first_name }}"))
    response = await client.post(
        "/api/v1/blocks/words/preview", json={"recipient": "u1"}, headers=JSON
    )
    body = await response.json()
    assert body["variant"] == "personal"
