"""Live HTTP data and segments in real opens: the app, a local partner API, a real store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from sample_blocks import greeting
from support import AUTH, put_block, signed

from content_sources.outbound import parse_allow
from server.records.segments_job import recompute_segments

# The partner API listens on loopback, which live data reaches only when allowed.
LOOPBACK = parse_allow("127.0.0.1/32")


def weather_block(port: int) -> dict[str, Any]:
    block = greeting("It is {{ data.weather }} degrees in {{ profile.city }}")
    block["variants"][0]["when"] = "data.weather > 20"
    block["data"] = {
        "weather": {
            "url": f"http://127.0.0.1:{port}/weather?city={{{{ profile.city | urlencode }}}}",
            "headers": {"Authorization": "Bearer {{ secrets.WEATHER_TOKEN }}"},
            "timeout_ms": 300,
            "ttl_s": 60,
            "select": "current.temp_c",
        }
    }
    return block


async def partner(aiohttp_server: Any, delay_s: float = 0.0) -> tuple[Any, list[str]]:
    """A weather API that answers by city and notes the Authorization it got."""
    seen: list[str] = []

    async def weather(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        await asyncio.sleep(delay_s)
        temperature = {"Lisbon": 24, "Oslo": 3}.get(request.query.get("city", ""), 15)
        return web.json_response({"current": {"temp_c": temperature}})

    app = web.Application()
    app.router.add_get("/weather", weather)
    return await aiohttp_server(app), seen


async def test_live_data_chooses_the_variant_and_stays_cached(
    make_client: Any, settings: Any, aiohttp_server: Any
) -> None:
    from dataclasses import replace

    server, seen = await partner(aiohttp_server)
    client = await make_client(
        replace(settings, data_secrets={"WEATHER_TOKEN": "w-123"}, fetch_allow=LOOPBACK)
    )
    await put_block(client, "weather", weather_block(server.port))
    for rid, city in (("u1", "Lisbon"), ("u2", "Oslo")):
        await client.put(f"/api/v1/profiles/{rid}", json={"city": city}, headers=AUTH)
    assert (await client.get(signed("/i/weather.png?r=u1"))).headers["X-Atopen-Variant"] == "named"
    assert (await client.get(signed("/i/weather.png?r=u2"))).headers[
        "X-Atopen-Variant"
    ] == "default"
    assert seen == ["Bearer w-123", "Bearer w-123"]
    await client.get(signed("/i/weather.png?r=u1"))
    assert len(seen) == 2  # answered from the shared cache
    preview = await client.post(
        "/api/v1/blocks/weather/preview",
        json={"recipient": "u2"},
        headers={**AUTH, "Accept": "application/json"},
    )
    sources = (await preview.json())["sources"]
    assert [(s["name"], s["outcome"]) for s in sources] == [("weather", "cached")]


async def test_a_slow_partner_makes_the_value_missing_not_the_open(
    make_client: Any, settings: Any, aiohttp_server: Any
) -> None:
    from dataclasses import replace

    server, _ = await partner(aiohttp_server, delay_s=2.0)
    client = await make_client(
        replace(
            settings,
            data_secrets={"WEATHER_TOKEN": "w"},
            render_deadline_ms=1000,
            fetch_allow=LOOPBACK,
        )
    )
    await put_block(client, "weather", weather_block(server.port))
    await client.put("/api/v1/profiles/u1", json={"city": "Lisbon"}, headers=AUTH)
    response = await client.get(signed("/i/weather.png?r=u1"))
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"


async def test_a_block_needing_an_unconfigured_secret_is_rejected(
    client: Any, aiohttp_server: Any
) -> None:
    server, _ = await partner(aiohttp_server)
    response = await client.put(
        "/api/v1/blocks/weather", json=weather_block(server.port), headers=AUTH
    )
    assert response.status == 422
    fields = [d["field"] for d in (await response.json())["error"]["details"]]
    assert any(f.startswith("data.weather.headers") for f in fields)


async def test_segments_reach_the_rules(client: Any, redis_url: str) -> None:
    block = greeting("Welcome back, loyal friend")
    block["variants"][0]["when"] = "rfm.segment == 'new'"
    await put_block(client, "vip", block)
    now = datetime.now(UTC)
    purchase = {
        "recipient": "u1",
        "type": "purchase",
        "ts": (now - timedelta(days=3)).isoformat(),
        "props": {"amount": 50},
    }
    assert (await client.post("/api/v1/events", json=purchase, headers=AUTH)).status == 202
    assert (await client.get(signed("/i/vip.png?r=u1"))).headers["X-Atopen-Variant"] == "default"
    async with aioredis.from_url(redis_url) as store:
        await recompute_segments(store, now)
    assert (await client.get(signed("/i/vip.png?r=u1"))).headers["X-Atopen-Variant"] == "named"
