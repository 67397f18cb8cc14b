"""Stores: the API (through its routes as the API serves them), `stores.nearest` in rules,
and the starter block, on a real Redis and MaxMind's City test database."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import geoip2.database
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import AUTH, LONDON_GEO, LONDON_IP

from content_sources import anonymous_context, gather_context
from content_sources.client import ClientSource
from content_sources.clock import ClockSource
from content_sources.expressions import Expression, MissingValueError, Template
from content_sources.geo import GeoSource
from content_sources.params import ParamsSource
from content_sources.profile import ProfileSource
from content_sources.redis_keys import profile_key
from content_sources.shops import (
    STORES_GEO_KEY,
    STORES_KEY,
    ShopsSource,
    StoreDirectory,
    StoresView,
    complete_stores,
)
from content_sources.source import OpenRequest, Source
from renderers.resources import LocalResources, builtin_fonts
from server.api.app_state import REDIS, SETTINGS
from server.api.shops_routes import routes
from server.blocks.compiling import compile_block
from server.blocks.selection import choose_variant
from server.settings import Settings
from server.web.app import TEMPLATES_DIR
from server.web.request_handling import api_handler, routes_with

Client = TestClient[Any, Any]
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)  # a Monday
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML)"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
LONDON = (LONDON_GEO["lat"], LONDON_GEO["lon"])
PARIS: dict[str, Any] = {"country": "FR", "city": "Paris", "lat": 48.8606, "lon": 2.3376}


def place(name: str, lat: float, lon: float, **more: Any) -> dict[str, Any]:
    return {"name": name, "address": f"1 High Street, {name}", "lat": lat, "lon": lon, **more}


STORES = {
    "soho": place("Soho", 51.5133, -0.1389, url="https://shop.example.com/stores/soho"),
    "camden": place("Camden", 51.5390, -0.1426),
    "oxford": place("Oxford", 51.7520, -1.2577),
    "paris": place("Paris", 48.8566, 2.3522, url="https://shop.example.com/stores/paris"),
}


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance on Redis's sphere (radius 6372.797560856 km)."""
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6372.797560856 * math.asin(math.sqrt(h))


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.from_url(redis_url) as client:
        yield client


def sources(reader: geoip2.database.Reader, radius_km: float = 1000) -> tuple[Source, ...]:
    geo = GeoSource(reader)
    return (
        ProfileSource(),
        ClockSource(),
        ClientSource(),
        geo,
        ShopsSource(geo, radius_km),
        ParamsSource(),
    )


async def open_context(
    store: aioredis.Redis,
    reader: geoip2.database.Reader,
    *,
    user_agent: str = BROWSER,
    ip: str | None = LONDON_IP,
    at: datetime = NOW,
    radius_km: float = 1000,
) -> dict[str, object]:
    """An open's context after its round trip and the stores' second step."""
    request = OpenRequest(at=at, recipient="u1", user_agent=user_agent, client_ip=ip)
    context = await gather_context(
        store, sources(reader, radius_km), request, frozenset({"stores"})
    )
    await complete_stores(store, context)
    return context


def nearest(context: dict[str, object], **arguments: Any) -> list[dict[str, Any]]:
    view = context["stores"]
    assert isinstance(view, StoresView)
    found = view.nearest(**arguments)
    assert isinstance(found, list)
    return found


# ------------------------------------------------------------------ stores.nearest


async def test_nearest_stores_in_order_within_max_km_in_miles_for_the_uk(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await StoreDirectory(store).put_many(STORES)
    context = await open_context(store, reader)
    found = nearest(context, n=3)
    assert [s["id"] for s in found] == ["soho", "camden", "oxford"]
    for shown in found:
        miles = km_between(LONDON, (shown["lat"], shown["lon"])) / 1.609344
        assert shown["distance"] == pytest.approx(miles, abs=0.06)
        assert shown["distance_unit"] == "mi"
    assert found[0]["name"] == "Soho"
    assert found[0]["url"] == "https://shop.example.com/stores/soho"
    assert [s["id"] for s in nearest(context, n=3, max_km=10)] == ["soho", "camden"]
    assert nearest(context, max_km=1) == []
    assert Template("{{ stores.nearest()[0].name }}").render(context) == "Soho"
    assert not Expression("stores.nearest(max_km=1)").holds(context)


async def test_the_reader_placed_by_ip_is_searched_in_the_same_round_trip(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await StoreDirectory(store).put_many(STORES)
    source = sources(reader)[4]
    browser = OpenRequest(at=NOW, recipient="u1", user_agent=BROWSER, client_ip=LONDON_IP)
    gmail = OpenRequest(at=NOW, recipient="u1", user_agent=GMAIL, client_ip=LONDON_IP)
    assert [c[0] for c in source.commands(browser)] == ["EVAL"]
    assert source.commands(gmail) == ()
    context = await gather_context(store, sources(reader), browser, frozenset({"stores"}))
    view = context["stores"]
    assert isinstance(view, StoresView)
    assert view.pending is None  # nothing left for a second step
    assert nearest(context)[0]["id"] == "soho"


async def test_a_reader_placed_by_the_profile_is_searched_in_a_second_step(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await StoreDirectory(store).put_many(STORES)
    await store.set(profile_key("u1"), orjson.dumps(PARIS))
    request = OpenRequest(at=NOW, recipient="u1", user_agent=GMAIL, client_ip=LONDON_IP)
    context = await gather_context(store, sources(reader), request, frozenset({"stores"}))
    view = context["stores"]
    assert isinstance(view, StoresView)
    assert view.pending == (PARIS["lat"], PARIS["lon"])
    with pytest.raises(MissingValueError):
        Template("{{ stores.nearest()[0].name }}").render(context)
    await complete_stores(store, context)
    found = nearest(context)
    assert [s["id"] for s in found] == ["paris"]
    assert found[0]["distance_unit"] == "km"  # a reader in France
    km = km_between((PARIS["lat"], PARIS["lon"]), (48.8566, 2.3522))
    assert found[0]["distance"] == pytest.approx(km, abs=0.06)


async def test_the_second_step_follows_a_location_set_after_the_round_trip(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    """A preview "as a reader in Paris" replaces `geo` after the round trip."""
    await StoreDirectory(store).put_many(STORES)
    request = OpenRequest(at=NOW, recipient="u1", user_agent=BROWSER, client_ip=LONDON_IP)
    context = await gather_context(store, sources(reader), request, frozenset({"stores"}))
    context["geo"] = {**PARIS, "source": "profile"}
    await complete_stores(store, context)
    assert nearest(context)[0]["id"] == "paris"


async def test_max_km_never_reaches_past_the_configured_radius(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await StoreDirectory(store).put_many(STORES)
    context = await open_context(store, reader, radius_km=100)
    assert [s["id"] for s in nearest(context, n=10, max_km=5000)] == ["soho", "camden", "oxford"]


async def test_an_unknown_location_makes_nearest_a_missing_value(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await StoreDirectory(store).put_many(STORES)
    context = await open_context(store, reader, user_agent=GMAIL)
    assert context["geo"] == {"source": "none"}
    with pytest.raises(MissingValueError):
        Template("{{ stores.nearest()[0].name }}").render(context)
    with pytest.raises(MissingValueError):
        Expression("stores.nearest()").holds(context)
    assert Template("{{ stores.nearest()[0].name | default('our shop') }}").render(context)


async def test_a_store_that_cannot_be_reached_makes_nearest_missing_not_an_error(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    await store.set(profile_key("u1"), orjson.dumps(PARIS))
    request = OpenRequest(at=NOW, recipient="u1", user_agent=GMAIL)
    context = await gather_context(store, sources(reader), request, frozenset({"stores"}))
    async with aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1) as down:
        await complete_stores(down, context)
    with pytest.raises(MissingValueError):
        Template("{{ stores.nearest()[0].name }}").render(context)


@pytest.mark.parametrize(
    "call", ["nearest(n=0)", "nearest(n=11)", "nearest(n='2')", "nearest(max_km=0)"]
)
async def test_bad_arguments_make_the_rule_fall_through(
    store: aioredis.Redis, reader: geoip2.database.Reader, call: str
) -> None:
    await StoreDirectory(store).put_many(STORES)
    context = await open_context(store, reader)
    with pytest.raises(MissingValueError):
        Template("{{ stores." + call + "[0].name }}").render(context)


async def test_today_hours_follow_the_readers_day_or_the_stores_own(
    store: aioredis.Redis, reader: geoip2.database.Reader
) -> None:
    week = {"sun": "12:00-16:00", "mon": "09:00-18:00"}
    await StoreDirectory(store).put_many(
        {
            "local": place("Local", 51.5133, -0.1389, hours=week),
            "new-york-zone": place("Far zone", 51.5390, -0.1426, hours=week, tz="America/New_York"),
            "no-hours": place("No hours", 51.7520, -1.2577),
        }
    )
    # 23:30 UTC on a Sunday: already Monday in Warsaw, still Sunday in New York.
    sunday_night = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)
    await store.set(profile_key("u1"), orjson.dumps({"tz": "Europe/Warsaw"}))
    found = {s["id"]: s for s in nearest(await open_context(store, reader, at=sunday_night), n=3)}
    assert found["local"]["today_hours"] == "09:00-18:00"
    assert found["new-york-zone"]["today_hours"] == "12:00-16:00"
    assert "today_hours" not in found["no-hours"]
    await store.delete(profile_key("u1"))  # a reader in UTC: Sunday
    found = {s["id"]: s for s in nearest(await open_context(store, reader, at=sunday_night), n=3)}
    assert found["local"]["today_hours"] == "12:00-16:00"


# ------------------------------------------------------------------ the starter block


def resources() -> LocalResources:
    return LocalResources([TEMPLATES_DIR / "assets"], builtin_fonts())


async def test_the_starter_block_shows_and_links_the_nearest_store(
    store: aioredis.Redis, reader: geoip2.database.Reader, api: Client
) -> None:
    demo = (TEMPLATES_DIR / "demo" / "stores.json").read_bytes()
    response = await api.post("/api/v1/stores", data=demo, headers=AUTH)
    assert response.status == 200, await response.text()
    assert await response.json() == {"stored": len(orjson.loads(demo))}
    definition = orjson.loads((TEMPLATES_DIR / "blocks" / "nearest-store.json").read_bytes())
    block = compile_block("nearest-store", definition, 1, resources())
    # The default resolves with no data at all (what every block must do).
    anonymous = anonymous_context(sources(reader), OpenRequest(at=NOW))
    assert choose_variant(block, anonymous, resources(), default_only=True).variant == "default"

    context = await open_context(store, reader)  # a reader in London, by IP
    choice = choose_variant(block, context, resources())
    assert choice.variant == "nearest"
    assert choice.link == "https://shop.example.com/stores/london-soho"
    texts = [layer.text for layer in choice.layers if hasattr(layer, "text")]
    assert texts[0] == "Your nearest store: Soho"
    assert texts[1].endswith(" mi away, 12 Carnaby Street, London W1F 9PS")
    assert texts[2] == "Today: 10:00-20:00"  # a Monday in London

    far = await open_context(store, reader, user_agent=GMAIL)  # nowhere known
    assert choose_variant(block, far, resources()).variant == "default"


# ------------------------------------------------------------------ the API


@pytest.fixture
async def api(aiohttp_client: Any, redis_url: str, settings: Settings) -> Client:
    """The stores routes as the API serves them, with the store they write to."""
    app = web.Application()
    app[SETTINGS] = settings
    app.router.add_routes(routes_with(api_handler, routes))

    async def connect(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = aioredis.from_url(redis_url)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.append(connect)
    client: Client = await aiohttp_client(app)
    return client


async def stored_count(store: aioredis.Redis) -> tuple[int, int]:
    return await store.hlen(STORES_KEY), await store.zcard(STORES_GEO_KEY)


async def test_put_get_replace_delete(api: Client, store: aioredis.Redis) -> None:
    soho = {**STORES["soho"], "hours": {"mon": "09:00-13:00, 14:00-18:00", "sun": "closed"}}
    response = await api.put("/api/v1/stores/soho", json={**soho, "parking": True}, headers=AUTH)
    assert response.status == 201
    assert await response.json() == {"id": "soho", "store": {**soho, "parking": True}}
    response = await api.get("/api/v1/stores/soho", headers=AUTH)
    assert (await response.json())["store"]["parking"] is True

    # Replacing moves the store in the index too, and `null` members are dropped.
    moved = {**STORES["paris"], "url": None}
    response = await api.put("/api/v1/stores/soho", json=moved, headers=AUTH)
    assert response.status == 200
    without_url = {k: v for k, v in STORES["paris"].items() if k != "url"}
    assert (await response.json())["store"] == without_url
    stored = (await (await api.get("/api/v1/stores/soho", headers=AUTH)).json())["store"]
    assert stored == without_url
    position = (await store.geopos(STORES_GEO_KEY, "soho"))[0]
    assert position is not None
    lon, lat = position
    assert lat == pytest.approx(48.8566, abs=1e-4)
    assert lon == pytest.approx(2.3522, abs=1e-4)
    assert await stored_count(store) == (1, 1)

    assert (await api.delete("/api/v1/stores/soho", headers=AUTH)).status == 204
    assert await stored_count(store) == (0, 0)
    assert (await api.get("/api/v1/stores/soho", headers=AUTH)).status == 404
    assert (await api.delete("/api/v1/stores/soho", headers=AUTH)).status == 404


async def test_the_api_needs_a_token(api: Client) -> None:
    assert (await api.get("/api/v1/stores/soho")).status == 401


async def test_a_bad_store_is_rejected_naming_every_field_and_nothing_is_stored(
    api: Client, store: aioredis.Redis
) -> None:
    body = {
        "name": " ",
        "lat": 86.0,  # beyond what Redis's geo index holds
        "lon": "2.35",
        "url": "ftp://shop.example.com/",
        "tz": "Mars/Base",
        "distance": 3,
        "hours": {
            "mon": "9:00-18:00",
            "tue": "18:00-09:00",
            "wed": "09:00-13:00,12:00-18:00",
            "thu": "24:00-24:00",
            "fri": 9,
            "funday": "09:00-10:00",
            "sat": "00:00-24:00",
            "sun": "closed",
        },
    }
    response = await api.put("/api/v1/stores/paris", json=body, headers=AUTH)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid"
    assert {d["field"] for d in error["details"]} == {
        "name",
        "address",
        "lat",
        "lon",
        "url",
        "tz",
        "distance",
        "hours.mon",
        "hours.tue",
        "hours.wed",
        "hours.thu",
        "hours.fri",
        "hours.funday",
    }
    assert await stored_count(store) == (0, 0)

    response = await api.put(
        "/api/v1/stores/paris", json={**STORES["paris"], "hours": []}, headers=AUTH
    )
    assert [d["field"] for d in (await response.json())["error"]["details"]] == ["hours"]
    response = await api.put("/api/v1/stores/paris", json=[STORES["paris"]], headers=AUTH)
    assert [d["field"] for d in (await response.json())["error"]["details"]] == ["body"]
    response = await api.put("/api/v1/stores/two%20words", json=STORES["paris"], headers=AUTH)
    assert response.status == 422
    assert [d["field"] for d in (await response.json())["error"]["details"]] == ["id"]
    assert await stored_count(store) == (0, 0)


async def test_stores_are_listed_a_page_at_a_time_sorted_by_id(
    api: Client, store: aioredis.Redis
) -> None:
    ids = [f"s{i:02d}" for i in range(7)]
    body = [{"id": i, **place(f"Shop {i}", 51.5, -0.1)} for i in reversed(ids)]
    assert (await api.post("/api/v1/stores", json=body, headers=AUTH)).status == 200

    async def page(query: str) -> dict[str, Any]:
        response = await api.get(f"/api/v1/stores{query}", headers=AUTH)
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer

    first = await page("?limit=3")
    assert [s["id"] for s in first["stores"]] == ids[:3]
    assert first["stores"][0]["store"] == place("Shop s00", 51.5, -0.1)
    assert first["next"] == "s02"
    # A store removed and one added before the cursor move nothing after it.
    await api.delete("/api/v1/stores/s01", headers=AUTH)
    await api.put("/api/v1/stores/a-new", json=place("New", 51.5, -0.1), headers=AUTH)
    second = await page(f"?limit=3&after={first['next']}")
    assert [s["id"] for s in second["stores"]] == ids[3:6]
    last = await page(f"?limit=3&after={second['next']}")
    assert [s["id"] for s in last["stores"]] == ids[6:]
    assert last["next"] is None
    everything = await page("")
    assert [s["id"] for s in everything["stores"]] == ["a-new", "s00", *ids[2:]]
    assert everything["next"] is None

    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?after=a%20b", "after"),
    ):
        response = await api.get(f"/api/v1/stores{query}", headers=AUTH)
        assert response.status == 422
        assert [d["field"] for d in (await response.json())["error"]["details"]] == [field]


async def test_bulk_import_is_all_or_nothing(api: Client, store: aioredis.Redis) -> None:
    body = [{"id": key, **value} for key, value in STORES.items()]
    response = await api.post("/api/v1/stores", json=body, headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"stored": 4}
    assert await stored_count(store) == (4, 4)

    rejected = [
        {"id": "new", **place("New", 50.0, 0.0)},
        {"id": "bad", **place("Bad", 50.0, 181.0)},
        {**place("No id", 50.0, 0.0)},
        {"id": "new", **place("Again", 50.0, 0.0)},
        "not a store",
    ]
    response = await api.post("/api/v1/stores", json=rejected, headers=AUTH)
    assert response.status == 422
    fields = [d["field"] for d in (await response.json())["error"]["details"]]
    assert fields == ["[1].lon", "[2].id", "[3].id", "[4]"]
    assert await stored_count(store) == (4, 4)
    assert (await api.get("/api/v1/stores/new", headers=AUTH)).status == 404

    bad_bodies: list[Any] = [[], {"id": "x"}]
    for bad_body in bad_bodies:
        response = await api.post("/api/v1/stores", json=bad_body, headers=AUTH)
        assert response.status == 422
        assert [d["field"] for d in (await response.json())["error"]["details"]] == ["body"]
