"""The end-to-end scenarios on a real Redis Cluster (three masters, three replicas).

The app is the real one, started on `redis+cluster://` with every node as a seed; what
is checked is what a reader or a marketer notices: the variant served, the image, the
click's target, what the API answers. The last test counts the commands each node ran
for one open: a personal open reads from its recipient's master only, in one batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cluster.local_cluster import LocalCluster
from sample_blocks import CART_REMINDER, greeting
from support import AUTH, decode, put_block, signed
from test_classify import SAFARI
from test_polls import RESULTS, bar_block, red_pixels, vote

from content_sources.redis_keys import events_key, profile_key
from server import metrics
from server.api.app_state import OPEN_LOG, REDIS
from server.records.segments_job import recompute_segments
from server.web.templates_dir import TEMPLATES_DIR

Client = Any

# A block that names three items, which the cluster spreads over different slots.
SKUS = ("sku-red", "sku-green", "sku-blue")
STOCK_BLOCK: dict[str, Any] = {
    "width": 300,
    "height": 60,
    "format": "png",
    "variants": [
        {
            "name": "all-in-stock",
            "when": " and ".join(f"inventory['{sku}'].stock > 0" for sku in SKUS),
            "layers": [
                {"type": "fill", "color": "#0b6e4f"},
                {
                    "type": "text",
                    "box": [4, 4, 292, 52],
                    "text": "{{ inventory['sku-red'].name }} and more, in stock",
                },
            ],
            "link": "https://shop.example.com/all",
        }
    ],
    "default": {
        "layers": [{"type": "fill", "color": "#222222"}],
        "link": "https://shop.example.com/",
    },
}


async def open_image(client: Client, path: str, size: tuple[int, int]) -> str:
    """Open `path` signed: the variant served, once the image is checked whole."""
    response = await client.get(signed(path))
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert decode(await response.read()).size == size
    return str(response.headers["X-Atopen-Variant"])


async def call(client: Client, method: str, path: str, body: Any = None) -> Any:
    response = await client.request(method, path, json=body, headers=AUTH)
    assert response.status < 300, await response.text()
    return await response.json() if response.status != 204 else None


async def test_personal_opens_clicks_and_their_data_written_through_the_api(
    client: Client, cluster: LocalCluster
) -> None:
    await put_block(client, "cart", CART_REMINDER)
    # Recipients whose keys the cluster places on different masters.
    readers = [f"reader-{n}" for n in range(12)]
    masters = {cluster.master_of(profile_key(r)).port for r in readers}
    assert len(masters) == 3, "the readers should span every master"
    for reader in readers:
        await call(client, "PUT", f"/api/v1/profiles/{reader}", {"first_name": reader})
    half = len(readers) // 2
    events: list[dict[str, Any]] = [{"recipient": r, "type": "purchase"} for r in readers[:half]]
    events += [
        {"recipient": r, "type": "cart_abandoned", "props": {"item": "the red scarf"}}
        for r in readers[half:]
    ]
    stored = await call(client, "POST", "/api/v1/events", events)
    assert stored["stored"] == len(readers)

    for n, reader in enumerate(readers):
        variant = await open_image(client, f"/i/cart.png?r={reader}", (600, 200))
        assert variant == ("thanks" if n < half else "cart")
        click = await client.get(signed(f"/c/cart?r={reader}"), allow_redirects=False)
        assert click.status == 302
        expected = "orders" if n < half else "cart"
        assert click.headers["Location"] == f"https://shop.example.com/{expected}"

    # A merge patch and an erasure are seen by the next open.
    await call(client, "PATCH", f"/api/v1/profiles/{readers[0]}", {"first_name": "Ann"})
    profile = await call(client, "GET", f"/api/v1/profiles/{readers[0]}")
    assert profile["profile"]["first_name"] == "Ann"
    await call(client, "DELETE", f"/api/v1/profiles/{readers[0]}")
    assert await open_image(client, f"/i/cart.png?r={readers[0]}", (600, 200)) == "default"
    assert not cluster.master_of(events_key(readers[0])).client().exists(events_key(readers[0]))


async def test_items_spread_over_the_cluster_are_read_together_and_changes_are_seen(
    client: Client,
) -> None:
    await put_block(client, "stock", STOCK_BLOCK)
    items = [{"sku": sku, "stock": 3, "name": sku.removeprefix("sku-")} for sku in SKUS]
    await call(client, "POST", "/api/v1/inventory", items)
    assert await open_image(client, "/i/stock.png", (300, 60)) == "all-in-stock"
    # Read your writes: the next open sees the item sold out.
    await call(client, "PATCH", "/api/v1/inventory/sku-blue", {"stock": 0})
    assert await open_image(client, "/i/stock.png", (300, 60)) == "default"
    await call(client, "DELETE", "/api/v1/inventory/sku-blue")
    assert await open_image(client, "/i/stock.png", (300, 60)) == "default"


async def test_the_nearest_store_of_a_reader_placed_by_the_profile(client: Client) -> None:
    demo = orjson.loads((TEMPLATES_DIR / "demo" / "stores.json").read_bytes())
    await call(client, "POST", "/api/v1/stores", demo)
    definition = orjson.loads((TEMPLATES_DIR / "blocks" / "nearest-store.json").read_bytes())
    await call(client, "PUT", "/api/v1/blocks/nearest", definition)
    london = {"country": "GB", "city": "London", "lat": 51.5133, "lon": -0.1389}
    await call(client, "PUT", "/api/v1/profiles/londoner", london)
    assert await open_image(client, "/i/nearest.png?r=londoner", (600, 160)) == "nearest"
    click = await client.get(signed("/c/nearest?r=londoner"), allow_redirects=False)
    assert click.headers["Location"] == "https://shop.example.com/stores/london-soho"
    # Nobody placed: the default, as on one Redis.
    assert await open_image(client, "/i/nearest.png?r=nowhere", (600, 160)) == "default"


async def test_a_block_written_is_served_by_the_next_open(client: Client) -> None:
    await call(client, "PUT", "/api/v1/profiles/u1", {"first_name": "Ann"})
    await put_block(client, "hello", greeting("Hello {{ profile.first_name }}"))
    assert await open_image(client, "/i/hello.png?r=u1", (400, 100)) == "named"
    replaced = greeting()
    replaced["variants"][0]["name"] = "second"
    await put_block(client, "hello", replaced)
    assert await open_image(client, "/i/hello.png?r=u1", (400, 100)) == "second"
    assert (await call(client, "GET", "/api/v1/blocks/hello"))["version"] == 2
    assert (await client.delete("/api/v1/blocks/hello", headers=AUTH)).status == 204
    assert (await client.get(signed("/i/hello.png?r=u1"))).status == 404


def read_commands(cluster: LocalCluster) -> dict[int, dict[str, int]]:
    """Per master port: how many of each read command it ran since its stats were reset."""
    counts: dict[int, dict[str, int]] = {}
    for node in cluster.masters():
        with node.client() as c:
            stats = c.info("commandstats")
        counts[node.port] = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") in ("get", "zrevrange", "hgetall", "mget")
        }
    return counts


def round_trips() -> float:
    """How many store round trips the opens' batches have made in this process."""
    metrics.flush_local()
    for family in metrics.STORE_SECONDS_SERIES.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return sample.value
    raise AssertionError("no store round trips counted")


@pytest.mark.parametrize("reader", ["reader-a", "reader-b", "reader-c"])
async def test_a_personal_open_is_one_round_trip_to_its_recipients_master(
    client: Client, cluster: LocalCluster, reader: str
) -> None:
    await put_block(client, "cart", CART_REMINDER)
    await call(client, "PUT", f"/api/v1/profiles/{reader}", {"first_name": "Ann"})
    await call(client, "POST", "/api/v1/events", {"recipient": reader, "type": "purchase"})
    for node in cluster.masters():
        with node.client() as c:
            c.config_resetstat()
    trips = round_trips()

    assert await open_image(client, f"/i/cart.png?r={reader}", (600, 200)) == "thanks"

    assert round_trips() == trips + 1
    home = cluster.master_of(profile_key(reader)).port
    counts = read_commands(cluster)
    # The profile and the events, read on the recipient's master; nothing elsewhere.
    assert counts[home] == {"get": 1, "zrevrange": 1}
    assert all(not reads for port, reads in counts.items() if port != home)


async def test_segments_are_computed_over_recipients_on_every_master(
    client: Client, cluster: LocalCluster
) -> None:
    buyers = [f"buyer-{n}" for n in range(9)]
    assert len({cluster.master_of(profile_key(b)).port for b in buyers}) == 3
    events = [{"recipient": b, "type": "purchase", "props": {"amount": 10}} for b in buyers]
    await call(client, "POST", "/api/v1/events", events)
    block = greeting("Welcome, new customer")
    block["variants"][0].update(name="welcome", when="rfm.segment == 'new'")
    await put_block(client, "welcome", block)

    report = await recompute_segments(client.server.app[REDIS], datetime.now(UTC))

    assert (report.base, report.written) == (len(buyers), len(buyers))
    for buyer in buyers:
        assert await open_image(client, f"/i/welcome.png?r={buyer}", (400, 100)) == "welcome"
    assert await open_image(client, "/i/welcome.png?r=never-bought", (400, 100)) == "default"


async def test_the_server_is_ready_on_a_healthy_cluster(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"store": "ok", "blocks": "ok"}


async def test_records_reports_engagement_and_the_audit_on_the_cluster(
    client: Client, cluster: LocalCluster
) -> None:
    readers = [f"reader-{n}" for n in range(9)]
    assert len({cluster.master_of(profile_key(r)).port for r in readers}) == 3
    block = greeting("Welcome back")
    block["variants"][0].update(name="seen-before", when="engagement.opens() >= 1")
    await put_block(client, "offer", block)
    browser = {"User-Agent": SAFARI}

    async def open_as_a_reader(reader: str) -> str:
        response = await client.get(signed(f"/i/offer.png?r={reader}"), headers=browser)
        assert response.status == 200
        return str(response.headers["X-Atopen-Variant"])

    assert [await open_as_a_reader(r) for r in readers] == ["default"] * len(readers)
    await client.server.app[OPEN_LOG].flush()  # the opens are recorded, on every master
    assert [await open_as_a_reader(r) for r in readers] == ["seen-before"] * len(readers)
    await client.server.app[OPEN_LOG].flush()

    response = await client.get("/api/v1/records?limit=100", headers=AUTH)
    records = [orjson.loads(line) for line in (await response.read()).splitlines()]
    assert sorted(r["recipient"] for r in records) == sorted(readers * 2)
    stats = await call(client, "GET", "/api/v1/blocks/offer/stats?by=variant")
    rows = {row["key"]: row for row in stats["rows"]}
    assert rows["default"]["impressions"] == rows["seen-before"]["impressions"] == len(readers)
    assert rows["seen-before"]["unique_readers"] == len(readers)
    audit = await call(client, "GET", "/api/v1/audit", None)
    assert any(e["route"] == "/api/v1/blocks/{id}" for e in audit["entries"])


async def test_votes_from_readers_on_every_master_make_one_tally(
    client: Client, cluster: LocalCluster
) -> None:
    readers = [f"reader-{n}" for n in range(8)]
    assert len({cluster.master_of(profile_key(r)).port for r in readers}) == 3
    await put_block(client, "poll", bar_block(results=RESULTS))
    for n, reader in enumerate(readers):
        assert await vote(client, reader, "yes" if n < 6 else "no") == RESULTS
    await vote(client, readers[0], "no")  # a new vote replaces the old one
    # 5 of 8 say yes: 62.5 %, rounded to 63, of the 200-pixel bar is red.
    assert await red_pixels(client, readers[1]) == (126, "voted")
    assert await red_pixels(client, readers[0]) == (126, "tally")
