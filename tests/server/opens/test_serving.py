"""Serving under load: render cache, single flight, load shedding, batched writes, metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from PIL import ImageChops
from sample_blocks import greeting, one_variant_block, slow_greeting
from support import AUTH, TOKEN, decode, free_port, put_block, signed
from yarl import URL

from content_sources.redis_keys import inventory_key
from renderers.plan import RenderPlan
from server.api.app_state import BLOCKS, OPENS
from server.opens import OpenQuery
from server.opens.render_cache import RenderCache
from server.settings import Settings, SettingsError, load_settings

SHARED_BLOCK = one_variant_block(
    "stock",
    "inventory['sku-1'].stock > 0",
    "Only {{ inventory['sku-1'].stock }} left",
    "https://shop.example.com/p/1",
    background="#ffffff",
    default_color="#000000",
    size=30,
)


async def metric(client: Any, name: str, **labels: str) -> float:
    """One sample from `/metrics` (0 when absent)."""
    text = await (await client.get("/metrics", headers=AUTH)).text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


class SlowRender:
    """A render that takes `seconds`, counts its calls and answers `body` (or raises)."""

    def __init__(self, body: bytes | Exception, seconds: float = 0.05) -> None:
        self.body = body
        self.seconds = seconds
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


async def test_identical_concurrent_misses_render_once(redis_url: str) -> None:
    slow_render = SlowRender(b"image")
    plan = RenderPlan(10, 10, 1, "png", ())
    async with aioredis.from_url(redis_url) as store:
        cache = RenderCache(store, memory_bytes=1 << 20, shared_ttl_s=60)
        bodies = await asyncio.gather(
            *(cache.get_or_render(plan, slow_render, shared=True) for _ in range(20))
        )
        assert bodies == [b"image"] * 20
        assert slow_render.calls == 1
        # A second process (an empty memory tier) finds it in Redis without rendering.
        other = RenderCache(store, memory_bytes=1 << 20, shared_ttl_s=60)
        assert await other.get_or_render(plan, slow_render, shared=True) == b"image"
        assert slow_render.calls == 1


async def test_processes_sharing_a_store_render_a_shared_plan_once(redis_url: str) -> None:
    slow_render = SlowRender(b"frame")
    plan = RenderPlan(20, 10, 1, "gif", ())
    async with aioredis.from_url(redis_url) as store:
        # Each cache stands for one worker process: its own memory tier and single flight.
        workers = [RenderCache(store, memory_bytes=1 << 20, shared_ttl_s=60) for _ in range(4)]
        bodies = await asyncio.gather(
            *(w.get_or_render(plan, slow_render, shared=True) for w in workers for _ in range(5))
        )
    assert bodies == [b"frame"] * 20
    assert slow_render.calls == 1


async def test_a_failed_render_reaches_every_waiter_and_is_not_cached(redis_url: str) -> None:
    failing = SlowRender(RuntimeError("broken"), seconds=0.01)
    plan = RenderPlan(10, 10, 1, "gif", ())
    async with aioredis.from_url(redis_url) as store:
        cache = RenderCache(store, memory_bytes=1 << 20, shared_ttl_s=60)
        results = await asyncio.gather(
            *(cache.get_or_render(plan, failing, shared=False) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert failing.calls == 1
        with pytest.raises(RuntimeError):
            await cache.get_or_render(plan, failing, shared=False)
        assert failing.calls == 2


async def test_shared_content_renders_once_for_many_recipients(client: Any) -> None:
    await put_block(client, "stock-once", SHARED_BLOCK)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    before = await metric(client, "atopen_renders_total", block="stock-once")
    responses = await asyncio.gather(
        *(client.get(signed(f"/i/stock-once.png?r=u{i}")) for i in range(30))
    )
    assert {r.headers["X-Atopen-Variant"] for r in responses} == {"stock"}
    assert await metric(client, "atopen_renders_total", block="stock-once") == before + 1


async def test_personal_renders_are_not_shared_but_each_is_correct(client: Any) -> None:
    await put_block(client, "names", greeting())
    for rid, name in (("u1", "Ann"), ("u2", "Bob")):
        await client.put(f"/api/v1/profiles/{rid}", json={"first_name": name}, headers=AUTH)
    first = decode(await (await client.get(signed("/i/names.png?r=u1"))).read())
    second = decode(await (await client.get(signed("/i/names.png?r=u2"))).read())
    again = decode(await (await client.get(signed("/i/names.png?r=u1"))).read())
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != second.tobytes()


async def test_a_changed_block_is_never_served_from_the_cache(client: Any) -> None:
    await put_block(client, "changing", SHARED_BLOCK)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    old = decode(await (await client.get(signed("/i/changing.png?r=u1"))).read())
    changed = {**SHARED_BLOCK, "variants": [dict(SHARED_BLOCK["variants"][0])]}
    changed["variants"][0]["layers"] = [
        {"type": "fill", "color": "#ffffff"},
        {
            "type": "text",
            "box": [10, 10, 280, 80],
            "text": "Hurry: {{ inventory['sku-1'].stock }}",
            "size": 30,
        },
    ]
    await put_block(client, "changing", changed)
    new = decode(await (await client.get(signed("/i/changing.png?r=u1"))).read())
    assert ImageChops.difference(old.convert("RGB"), new.convert("RGB")).getbbox() is not None
    # Stock changes are new content too.
    await client.patch("/api/v1/inventory/sku-1", json={"stock": 2}, headers=AUTH)
    newer = decode(await (await client.get(signed("/i/changing.png?r=u1"))).read())
    assert newer.tobytes() != new.tobytes()


async def client_for_ann(
    make_client: Any, settings: Settings, block_id: str, block: dict[str, Any]
) -> Any:
    """A client of an app with `settings`, `block` and recipient u1, Ann."""
    client = await make_client(settings)
    await put_block(client, block_id, block)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    return client


@pytest.mark.slow
async def test_a_render_past_its_deadline_counts_as_a_deadline_fallback(
    make_client: Any, settings: Settings
) -> None:
    # Time enough to read the store and admit the render even on a busy machine (which
    # would otherwise shed the open as overloaded); the render itself takes seconds.
    client = await client_for_ann(
        make_client, replace(settings, render_deadline_ms=300), "slow", slow_greeting()
    )
    deadlines = await metric(client, "atopen_fallbacks_total", reason="deadline")
    errors = await metric(client, "atopen_fallbacks_total", reason="error")
    response = await client.get(signed("/i/slow.png?r=u1&dpr=3"))
    assert response.headers["X-Atopen-Variant"] == "default"
    assert await metric(client, "atopen_fallbacks_total", reason="deadline") == deadlines + 1
    assert await metric(client, "atopen_fallbacks_total", reason="error") == errors


def heavy_greeting() -> dict[str, Any]:
    """A personalized block whose render takes a while: 400 names at 1000 x 1000."""
    return slow_greeting(names=400, side=1000, size=10)


@pytest.mark.slow
async def test_a_full_render_queue_sheds_to_the_default_image(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(replace(settings, render_threads=1, render_queue=0))
    await put_block(client, "heavy", heavy_greeting())
    for i in range(12):
        await client.put(f"/api/v1/profiles/u{i}", json={"first_name": f"N{i}"}, headers=AUTH)
    before = await metric(client, "atopen_fallbacks_total", reason="overloaded")
    responses = await asyncio.gather(
        *(client.get(signed(f"/i/heavy.png?r=u{i}&dpr=2")) for i in range(12))
    )
    variants = [r.headers["X-Atopen-Variant"] for r in responses]
    assert all(r.status == 200 for r in responses)
    assert "named" in variants
    assert "default" in variants
    for response in responses:
        assert decode(await response.read()).size == (2000, 2000)
    shed = await metric(client, "atopen_fallbacks_total", reason="overloaded")
    assert shed - before == variants.count("default")


async def get_calls(store: aioredis.Redis) -> int:
    """How many GETs (the profile reads) the store has answered."""
    stats = await store.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@pytest.mark.slow
async def test_while_the_pool_is_full_a_personal_open_reads_nothing_and_gets_the_default(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    """Its render would be refused: the store round trip and the rules are skipped too."""
    client = await make_client(
        replace(settings, render_threads=1, render_queue=0, render_deadline_ms=20_000)
    )
    await put_block(client, "heavy", heavy_greeting())
    for i in range(2):
        await client.put(f"/api/v1/profiles/u{i}", json={"first_name": f"N{i}"}, headers=AUTH)
    busy = asyncio.ensure_future(client.get(signed("/i/heavy.png?r=u0&dpr=2")))
    for _ in range(1000):  # until its render holds the pool's only thread
        if await metric(client, "atopen_render_queue_depth") == 1:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the first render never started")
    shed = await metric(client, "atopen_fallbacks_total", reason="overloaded")
    async with aioredis.from_url(redis_url) as store:
        reads = await get_calls(store)
        response = await client.get(signed("/i/heavy.png?r=u1&dpr=2"))
        assert await get_calls(store) == reads
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
    assert decode(await response.read()).size == (2000, 2000)
    assert await metric(client, "atopen_fallbacks_total", reason="overloaded") == shed + 1
    first = await busy
    assert first.headers["X-Atopen-Variant"] == "named"


@pytest.mark.slow
async def test_opens_starting_together_read_the_store_only_if_they_will_render(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    """Each takes its place in the render queue before its reads: with room for one
    render, the opens that arrive meanwhile are shed before reading anything, rather than
    all reading their profile and all but one being refused at the pool."""
    client = await make_client(
        replace(settings, render_threads=1, render_queue=0, render_deadline_ms=20_000)
    )
    await put_block(client, "heavy", heavy_greeting())
    for i in range(12):
        await client.put(f"/api/v1/profiles/u{i}", json={"first_name": f"N{i}"}, headers=AUTH)
    # Twelve opens that start in the same turn of the event loop, as from a burst of
    # connections: the opens' own entry point, since HTTP requests would arrive spread out.
    opens, heavy = client.server.app[OPENS], client.server.app[BLOCKS].get("heavy")
    async with aioredis.from_url(redis_url) as store:
        reads = await get_calls(store)
        urls = [URL(signed(f"/i/heavy.png?r=u{i}&dpr=2")) for i in range(12)]
        answers = await asyncio.gather(
            *(
                opens.image(
                    heavy,
                    "png",
                    OpenQuery.parse(list(url.query.items())),
                    path=url.raw_path,
                    raw_query=url.raw_query_string,
                    pairs=list(url.query.items()),
                    user_agent=None,
                )
                for url in urls
            )
        )
        profiles_read = await get_calls(store) - reads
    variants = [answer.variant for answer in answers]
    assert "default" in variants
    assert profiles_read == variants.count("named") >= 1


class StalledLoop:
    """Keeps the event loop 0.2 s behind, as a process serving more opens than it can:
    every turn of the loop first waits out a 0.2 s stretch of work."""

    async def __aenter__(self) -> None:
        self._stop = False
        self._task = asyncio.create_task(self._stall())

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        await self._task

    async def _stall(self) -> None:
        while not self._stop:
            time.sleep(0.2)  # noqa: ASYNC251 - stalling the loop is the point
            await asyncio.sleep(0)


@pytest.mark.slow
async def test_an_open_that_waited_out_its_deadline_for_the_loop_gets_the_default_at_once(
    make_client: Any, settings: Settings
) -> None:
    tight = await client_for_ann(
        make_client, replace(settings, render_deadline_ms=100), "greeting", greeting()
    )
    url = signed("/i/greeting.png?r=u1")
    assert (await tight.get(url)).headers["X-Atopen-Variant"] == "named"
    before = await metric(tight, "atopen_fallbacks_total", reason="overloaded")
    async with StalledLoop():
        response = await tight.get(url)
        body = await response.read()
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
    assert decode(body).size == (400, 100)
    assert await metric(tight, "atopen_fallbacks_total", reason="overloaded") == before + 1
    # With time to spare, the same stalls are waited out.
    patient = await make_client(replace(settings, render_deadline_ms=5000))
    async with StalledLoop():
        response = await patient.get(url)
    assert response.headers["X-Atopen-Variant"] == "named"


async def test_opens_are_counted_in_batches(client: Any) -> None:
    await put_block(client, "counted", SHARED_BLOCK)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 1}, headers=AUTH)
    for i in range(5):
        await client.get(signed(f"/i/counted.png?r=u{i}"))
    await client.get("/i/counted.png?r=u1")  # unsigned: the default
    for _ in range(500):
        stats = await (await client.get("/api/v1/blocks/counted/stats?days=1", headers=AUTH)).json()
        [today] = stats["impressions"].values()
        if sum(today.values()) == 6:
            break
        await asyncio.sleep(0.02)
    assert today == {"stock": 5, "default": 1}
    bad = await client.get("/api/v1/blocks/counted/stats?days=0", headers=AUTH)
    assert bad.status == 422


async def test_metrics_need_a_token_and_count_requests(client: Any) -> None:
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    await put_block(client, "metered", SHARED_BLOCK)
    before = await metric(client, "atopen_requests_total", route="image", outcome="static")
    await client.get(signed("/i/metered.png?r=u1"))  # no stock item: the static default
    after = await metric(client, "atopen_requests_total", route="image", outcome="static")
    assert after == before + 1
    text = await (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text()
    for name in (
        "atopen_request_seconds_bucket",
        "atopen_render_seconds_bucket",
        "atopen_cache_total",
        "atopen_render_queue_depth",
        "atopen_store_seconds_bucket",
    ):
        assert name in text


async def test_metrics_can_have_a_port_of_their_own_without_a_token(
    make_client: Any, settings: Settings
) -> None:
    port = free_port()
    client = await make_client(replace(settings, metrics_port=port))
    await put_block(client, "metered", SHARED_BLOCK)
    series = 'atopen_requests_total{outcome="static",route="image"} '
    async with aiohttp.ClientSession() as session:

        async def static_opens() -> float:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert answer.status == 200
                text = await answer.text()
            lines = text.splitlines()
            return sum(float(line[len(series) :]) for line in lines if line.startswith(series))

        before = await static_opens()
        await client.get(signed("/i/metered.png?r=u1"))  # no stock item: the static default
        assert await static_opens() == before + 1
        async with session.get(f"http://127.0.0.1:{port}/i/metered.png?r=u1") as other:
            assert other.status == 404  # the metrics port serves nothing else
    assert (await client.get("/metrics")).status == 401  # the service port still asks


def test_the_metrics_port_cannot_be_the_service_port() -> None:
    with pytest.raises(SettingsError, match="ATOPEN_METRICS_PORT"):
        load_settings({"ATOPEN_PORT": "9000", "ATOPEN_METRICS_PORT": "9000"})
    assert load_settings({"ATOPEN_METRICS_PORT": "9100"}).metrics_port == 9100


async def test_shared_choices_follow_the_data_and_the_client(client: Any) -> None:
    block = {**SHARED_BLOCK, "variants": [dict(SHARED_BLOCK["variants"][0])]}
    block["variants"][0]["when"] = "inventory['sku-1'].stock > 0 and not client.is_proxy"
    await put_block(client, "decided-once", block)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)
    gmail = {"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}

    async def variant(rid: str, headers: dict[str, str] | None = None) -> str:
        response = await client.get(signed(f"/i/decided-once.png?r={rid}"), headers=headers)
        return str(response.headers["X-Atopen-Variant"])

    assert [await variant(f"u{i}") for i in range(3)] == ["stock"] * 3
    assert await variant("u9", gmail) == "default"
    assert await variant("u10") == "stock"
    await client.patch("/api/v1/inventory/sku-1", json={"stock": 0}, headers=AUTH)
    assert await variant("u11") == "default"


async def test_inventory_changed_elsewhere_shows_once_the_kept_read_is_too_old(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await make_client(replace(settings, inventory_max_age_ms=300))
    await put_block(client, "stocked", SHARED_BLOCK)
    await client.put("/api/v1/inventory/sku-1", json={"stock": 3}, headers=AUTH)

    async def variant(rid: str) -> str:
        response = await client.get(signed(f"/i/stocked.png?r={rid}"))
        return str(response.headers["X-Atopen-Variant"])

    assert await variant("u1") == "stock"
    # Another process sells the last ones: this worker's opens see it within the max age.
    store = aioredis.from_url(redis_url)
    try:
        await store.set(inventory_key("sku-1"), b'{"stock": 0}')
    finally:
        await store.aclose()
    assert await variant("u2") == "stock"
    await asyncio.sleep(0.35)
    assert await variant("u3") == "default"


def test_the_inventory_max_age_is_a_setting() -> None:
    assert load_settings({}).inventory_max_age_ms == 100
    assert load_settings({"ATOPEN_INVENTORY_MAX_AGE_MS": "0"}).inventory_max_age_ms == 0
    with pytest.raises(SettingsError, match="ATOPEN_INVENTORY_MAX_AGE_MS"):
        load_settings({"ATOPEN_INVENTORY_MAX_AGE_MS": "-1"})
