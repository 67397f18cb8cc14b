"""Where the server and its OpenAPI document once disagreed: each case pinned down.

`tests/server/api/test_schemathesis.py` finds such disagreements by generating requests; these are
the ones it found, as plain examples, so a regression names itself.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sample_blocks import CART_REMINDER
from support import AUTH, refused_fields

from server.api.errors import ApiError
from server.api.ids import sku
from server.api.openapi import DOCUMENT

Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))["components"][
        "schemas"
    ]
    return schemas


# ------------------------------------------------------------------ every answer


async def test_the_server_header_tells_no_versions(client: Client) -> None:
    for path in ("/healthz", "/api/v1/openapi.json", "/api/v1/blocks", "/i/nothing.png"):
        response = await client.get(path)
        assert response.headers["Server"] == "atopen", path


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/api/v1/blocks", {"GET", "HEAD"}),
        ("POST", "/api/v1/blocks/b1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PUT", "/api/v1/inventory", {"POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ],
)
async def test_a_405_says_what_is_allowed(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    response = await client.request(method, path, headers=AUTH)
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == allowed


# ------------------------------------------------------------------ null is not a value


@pytest.mark.parametrize("field", ["split", "tz", "max_bytes"])
async def test_a_block_field_cannot_be_null(client: Client, field: str) -> None:
    response = await client.put(
        "/api/v1/blocks/b1", json={**CART_REMINDER, field: None}, headers=AUTH
    )
    assert response.status == 422
    details = (await response.json())["error"]["details"]
    assert details == [{"field": field, "message": "must not be null: leave the field out"}]


async def test_a_block_description_is_text(client: Client) -> None:
    response = await client.put(
        "/api/v1/blocks/b1", json={**CART_REMINDER, "description": 5}, headers=AUTH
    )
    assert await refused_fields(response) == ["description"]


async def test_a_preview_field_cannot_be_null(client: Client) -> None:
    await client.put("/api/v1/blocks/b1", json=CART_REMINDER, headers=AUTH)
    response = await client.post(
        "/api/v1/blocks/b1/preview",
        json={"client": None, "recipient": None},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert await refused_fields(response) == ["client", "recipient"]


@pytest.mark.parametrize("field", ["id", "ts"])
async def test_an_event_field_cannot_be_null(client: Client, field: str) -> None:
    event = {"recipient": "u1", "type": "purchase", field: None}
    response = await client.post("/api/v1/events", json=[event], headers=AUTH)
    assert await refused_fields(response) == [f"[0].{field}"]


# ------------------------------------------------------------------ whole numbers


async def test_a_whole_number_may_be_written_with_a_fraction(client: Client) -> None:
    """JSON Schema's `integer` is any number without a fractional part: `3.0` is one."""
    item = await client.put("/api/v1/inventory/sku-1", json={"stock": 3.0}, headers=AUTH)
    assert item.status == 200, await item.text()
    patched = await client.patch("/api/v1/inventory/sku-1", json={"stock": 2.0}, headers=AUTH)
    assert patched.status == 200
    block = {**CART_REMINDER, "width": 600.0, "height": 200.0, "max_bytes": 150_000.0}
    stored = await client.put("/api/v1/blocks/b1", json=block, headers=AUTH)
    assert stored.status == 201, await stored.text()
    fraction = await client.put("/api/v1/inventory/sku-2", json={"stock": 2.5}, headers=AUTH)
    assert fraction.status == 422


# ------------------------------------------------------------------ ids


def _character_class(pattern: str) -> set[str]:
    """The characters a pattern's `[^...]` class leaves out (checked by Python's `re`,
    which reads these escapes as JSON Schema's ECMA-262 regexes do)."""
    return {
        c
        for c in map(chr, range(sys.maxunicode + 1))
        if not re.fullmatch(pattern.removeprefix("^").removesuffix("+$"), c)
    }


def test_the_documented_id_whitespace_is_the_servers(schemas: dict[str, Any]) -> None:
    """An id the document allows is one the server takes, and the other way round."""
    spaces = {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    for name in ("Sku", "StoreId"):
        assert _character_class(schemas[name]["pattern"]) == spaces, name
    recipient = re.compile(schemas["RecipientId"]["pattern"])
    assert recipient.match("u\x1e1")
    assert not recipient.match("\x1e\x85 ")
    assert not recipient.match("a@b")


async def test_an_id_with_a_control_character_is_served(client: Client) -> None:
    # U+0019 is a control character but not whitespace: the document allows it.
    response = await client.get("/api/v1/inventory/a%19b", headers=AUTH)
    assert response.status == 404
    with pytest.raises(ApiError, match="no spaces"):
        sku("a\x1eb")


# ------------------------------------------------------------------ invalid whatever comes with it

SOHO = {"name": "Soho", "address": "1 Carnaby St, London", "lat": 51.5134, "lon": -0.1389}


@pytest.mark.parametrize("field", ["distance", "distance_unit", "today_hours"])
async def test_a_field_nearest_sets_is_refused_even_as_null(client: Client, field: str) -> None:
    response = await client.put("/api/v1/stores/soho", json={**SOHO, field: None}, headers=AUTH)
    assert await refused_fields(response) == [field]
    assert (await client.get("/api/v1/stores/soho", headers=AUTH)).status == 404


async def test_a_bad_days_is_refused_beside_a_range(client: Client) -> None:
    await client.put("/api/v1/blocks/b1", json=CART_REMINDER, headers=AUTH)
    for days in ("0", "401", "AAA"):
        response = await client.get(
            "/api/v1/blocks/b1/stats",
            params={"days": days, "from": "2026-05-01T00:00:00Z", "by": "variant"},
            headers=AUTH,
        )
        assert await refused_fields(response) == ["days"], days
