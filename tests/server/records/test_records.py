"""Records of opens and clicks: every answer and click, with its fields, off the
response path; exact counts across two workers; previews and unknown blocks never."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, decode, put_block, signed
from test_classify import APPLE_MPP, CURL, GMAIL_PROXY, IPHONE_MAIL, SAFARI
from test_workers import serving, worker_pid

from server.api.app_state import OPEN_LOG
from server.records.classify import AFTER_FETCH_S
from server.records.record import decode_batch
from server.records.record_keys import STREAM_KEY
from server.settings import Settings


def offer(arms: dict[str, int] | None = None) -> dict[str, Any]:
    """A block whose variant is the URL's `m.v` (a, b), else the default; each its link.
    With `arms`, a and b are a split's arms instead."""

    def variant(name: str, color: str) -> dict[str, Any]:
        return {
            "name": name,
            "when": "true" if arms else f"params.v == '{name}'",
            "layers": [{"type": "fill", "color": color}],
            "link": f"https://shop.example.com/{name}",
        }

    block: dict[str, Any] = {
        "width": 120,
        "height": 40,
        "variants": [variant("a", "#aa0000"), variant("b", "#0000aa")],
        "default": {
            "layers": [{"type": "fill", "color": "#222222"}],
            "link": "https://shop.example.com/",
        },
    }
    if arms:
        block["split"] = {"weights": arms}
    return block


async def open_as(client: TestClient[Any, Any], url: str, user_agent: str | None = None) -> str:
    headers = {} if user_agent is None else {"User-Agent": user_agent}
    response = await client.get(url, headers=headers, skip_auto_headers=["User-Agent"])
    assert response.status == 200
    assert decode(await response.read()).size == (120, 40)
    return response.headers["X-Atopen-Variant"]


async def click_as(client: TestClient[Any, Any], url: str, user_agent: str) -> str:
    response = await client.get(url, headers={"User-Agent": user_agent}, allow_redirects=False)
    assert response.status == 302
    return response.headers["Location"]


async def exported(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """Every record kept, through the export (after the open log's flush)."""
    await client.app[OPEN_LOG].flush()
    response = await client.get("/api/v1/records?limit=10000", headers=AUTH)
    assert response.status == 200
    assert response.content_type == "application/x-ndjson"
    return [orjson.loads(line) for line in (await response.read()).splitlines()]


async def test_every_answer_and_click_is_recorded_with_its_fields(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "offer", offer())
    assert await open_as(client, signed("/i/offer.png?r=u1&m.v=a"), IPHONE_MAIL) == "a"
    assert await open_as(client, signed("/i/offer.png?r=u2&m.v=b"), APPLE_MPP) == "b"
    assert await open_as(client, signed("/i/offer.png?r=u3"), CURL) == "default"
    # Unsigned: the default, and nobody's open.
    assert await open_as(client, "/i/offer.png?r=u4&m.v=a", GMAIL_PROXY) == "default"
    await client.app[OPEN_LOG].flush()
    assert await click_as(client, signed("/c/offer?r=u1"), SAFARI) == "https://shop.example.com/a"

    records = await exported(client)
    opens = [r for r in records if r["type"] == "open"]
    assert [(r["recipient"], r["variant"], r["client"], r["class"]) for r in opens] == [
        ("u1", "a", "browser", "human"),
        ("u2", "b", "apple_mpp", "prefetch"),
        ("u3", "default", "bot", "scanner"),
        (None, "default", "gmail_proxy", "human"),
    ]
    first = opens[0]
    assert first["block"] == "offer"
    assert first["version"] == 1
    assert first["outcome"] in ("rendered", "cached", "static")
    assert first["country"] is None  # the block reads no place
    assert first["ts"].endswith("+00:00")
    assert "link" not in first
    (click,) = [r for r in records if r["type"] == "click"]
    # The click came right after the image was fetched: a gateway's pattern (classify C2).
    assert click["class"] == "scanner"
    assert (click["recipient"], click["variant"], click["link"], click["client"]) == (
        "u1",
        "a",
        "https://shop.example.com/a",
        "browser",
    )
    assert "outcome" not in click


async def test_previews_unknown_blocks_and_failed_signatures_on_clicks_record_no_one(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "offer", offer())
    preview = await client.post(
        "/api/v1/blocks/offer/preview", json={"recipient": "u1"}, headers=AUTH
    )
    assert preview.status == 200
    missing = await client.get(signed("/i/nothing.png?r=u1"))
    assert missing.status == 404
    assert await click_as(client, "/c/offer?r=u1&sig=bad", SAFARI) == "https://shop.example.com/"
    records = await exported(client)
    assert [(r["type"], r["recipient"]) for r in records] == [("click", None)]


async def test_recording_off_writes_no_records_and_opens_still_answer(
    make_client: Any, settings: Settings, redis_url: str
) -> None:
    client = await make_client(replace(settings, records_max=0))
    await put_block(client, "offer", offer())
    assert await open_as(client, signed("/i/offer.png?r=u1&m.v=a"), IPHONE_MAIL) == "a"
    await click_as(client, signed("/c/offer?r=u1"), SAFARI)
    await client.app[OPEN_LOG].flush()
    async with aioredis.from_url(redis_url) as store:
        assert await store.exists(STREAM_KEY) == 0
    impressions = await client.get("/api/v1/blocks/offer/stats?days=1", headers=AUTH)
    assert sum((await impressions.json())["impressions"].popitem()[1].values()) == 1


async def test_an_open_is_answered_when_the_store_cannot_take_its_record(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    """A record that cannot be written is lost, and the open is answered all the same."""
    await put_block(client, "offer", offer())
    async with aioredis.from_url(redis_url) as store:
        await store.set(STREAM_KEY, "not a stream")  # every XADD now fails
        assert await open_as(client, signed("/i/offer.png?r=u1&m.v=a"), IPHONE_MAIL) == "a"
        await client.app[OPEN_LOG].flush()
        assert await store.get(STREAM_KEY) == b"not a stream"
    # The open's memory was written all the same: the click follows the variant shown.
    assert await click_as(client, signed("/c/offer?r=u1"), SAFARI) == "https://shop.example.com/a"


# The known sequence for two workers: (recipient, variant, User-Agent) per open.
SEQUENCE = [
    *[(f"h{i}", "a", IPHONE_MAIL) for i in range(12)],
    *[(f"h{i}", "a", IPHONE_MAIL) for i in range(4)],  # four of them open again
    *[(f"g{i}", "b", GMAIL_PROXY) for i in range(8)],
    *[(f"p{i}", "b", APPLE_MPP) for i in range(6)],
    *[(f"s{i}", "a", CURL) for i in range(5)],
]
# Who then clicks, as a person would (after the image, from a browser).
CLICKERS = ["h0", "h1", "h2", "g0", "g1", "p0"]


async def fetch_on_a_new_connection(base: str, path: str, user_agent: str) -> int:
    """One request on its own connection (the kernel picks a worker for each); the pid of
    the worker that answered."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(
            base + signed(path), headers={"User-Agent": user_agent}, allow_redirects=False
        ) as response:
            assert response.status in (200, 302)
            await response.read()
        return await worker_pid(session, base)


async def until_counted(base: str, query: str, impressions: int, clicks: int = 0) -> dict[str, Any]:
    """The report once every open and click reached it (each worker flushes on its own)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(
                f"{base}/api/v1/blocks/offer/stats?{query}", headers=AUTH
            ) as response:
                assert response.status == 200
                report: dict[str, Any] = await response.json()
            rows = report["rows"]
            if sum(r["impressions"] for r in rows) >= impressions and (
                sum(r["clicks"] for r in rows) >= clicks
            ):
                return report
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_counts_match_a_known_sequence_of_opens_and_clicks_across_two_workers(
    redis_url: str, tmp_path: Path
) -> None:
    with serving(redis_url, tmp_path / "data", 2) as served:
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"{served.base}/api/v1/blocks/offer", json=offer(), headers=AUTH
            ) as response,
        ):
            assert response.status == 201
        await asyncio.sleep(0.5)  # both workers hear of the block
        opened = await asyncio.gather(
            *(
                fetch_on_a_new_connection(served.base, f"/i/offer.png?r={r}&m.v={v}", ua)
                for r, v, ua in SEQUENCE
            )
        )
        # Every open written (and with it what each reader was shown), people click a
        # while after the image.
        await until_counted(served.base, "by=variant", len(SEQUENCE))
        await asyncio.sleep(AFTER_FETCH_S + 0.5)
        clicked = await asyncio.gather(
            *(fetch_on_a_new_connection(served.base, f"/c/offer?r={r}", SAFARI) for r in CLICKERS)
        )
        assert len(set(opened) | set(clicked)) == 2, "one worker answered: the test shows nothing"
        report = await until_counted(served.base, "by=variant", len(SEQUENCE), len(CLICKERS))
        rows = {row["key"]: row for row in report["rows"]}
        assert set(rows) == {"a", "b"}
        assert {k: rows[k]["impressions"] for k in rows} == {"a": 21, "b": 14}
        assert {k: rows[k]["human_opens"] for k in rows} == {"a": 16, "b": 8}
        assert {k: rows[k]["machine_fetches"] for k in rows} == {"a": 5, "b": 6}
        # h0-h2 clicked a; g0, g1 and p0 clicked b (p0's opens were prefetches, but the
        # click shows the person read it).
        assert {k: rows[k]["clicks"] for k in rows} == {"a": 3, "b": 3}
        assert {k: rows[k]["unique_clickers"] for k in rows} == {"a": 3, "b": 3}
        assert {k: rows[k]["unique_readers"] for k in rows} == {"a": 12, "b": 9}
        assert rows["a"]["ctr"] == pytest.approx(3 / 12)

        by_client = await until_counted(served.base, "by=client", len(SEQUENCE))
        clients = {row["key"]: row["impressions"] for row in by_client["rows"]}
        assert clients == {"browser": 16, "gmail_proxy": 8, "apple_mpp": 6, "bot": 5}

        async with aioredis.from_url(redis_url) as store:
            # Stream entries as the client answers them: ids and fields as bytes.
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await store.xrange(STREAM_KEY))
        kinds = Counter(r.type for _, fields in entries for r in decode_batch(fields[b"r"]))
        assert kinds == {"open": len(SEQUENCE), "click": len(CLICKERS)}
