"""Every answer names the server as `atopen`, never with the versions of what runs it."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sample_blocks import CART_REMINDER
from support import AUTH, put_block, signed


async def test_every_kind_of_answer_says_server_atopen(client: TestClient[Any, Any]) -> None:
    await put_block(client, "hero", CART_REMINDER)
    answers = {
        "image": (200, await client.get(signed("/i/hero.png?r=u1"))),
        "click": (302, await client.get(signed("/c/hero?r=u1"), allow_redirects=False)),
        "404 pixel": (404, await client.get("/i/nothing.png")),
        "unknown click": (404, await client.get("/c/nothing")),
        "API": (200, await client.get("/api/v1/blocks", headers=AUTH)),
        "API error": (401, await client.get("/api/v1/blocks")),
        "unknown path": (404, await client.get("/no/such/path")),
        "wrong method": (405, await client.post("/i/hero.png")),
        "healthz": (200, await client.get("/healthz")),
    }
    for name, (status, response) in answers.items():
        assert response.status == status, name
        assert response.headers.getall("Server") == ["atopen"], name


async def test_a_405_off_the_api_says_what_is_allowed(client: TestClient[Any, Any]) -> None:
    response = await client.post("/i/hero.png")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert (await response.text()).startswith("405")
    response = await client.get("/no/such/path")
    assert await response.text() == "404: Not Found"
