"""The export, `GET /api/v1/records`: every record once by following the cursor, while
opens keep arriving; 410 for a cursor past what is kept; 422 for bad parameters."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, human_record, put_block, refused_fields, signed
from test_classify import IPHONE_MAIL
from test_records import offer, open_as

from server.api.app_state import OPEN_LOG
from server.records.record import encode_batch
from server.records.record_keys import COUNT_KEY, STREAM_KEY
from server.settings import Settings


async def page(
    client: TestClient[Any, Any], after: str | None, limit: int
) -> tuple[int, list[dict[str, Any]], str | None]:
    query = f"limit={limit}" + ("" if after is None else f"&after={after}")
    response = await client.get(f"/api/v1/records?{query}", headers=AUTH)
    if response.status != 200:
        return response.status, [], None
    lines = (await response.read()).splitlines()
    return 200, [orjson.loads(line) for line in lines], response.headers["X-Atopen-Cursor"]


async def test_following_the_cursor_reads_every_record_once_while_opens_keep_arriving(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "offer", offer())
    recipients = [f"u{i}" for i in range(150)]

    async def keep_opening() -> None:
        for r in recipients:
            await open_as(client, signed(f"/i/offer.png?r={r}&m.v=a"), IPHONE_MAIL)
            if int(r[1:]) % 10 == 0:
                await asyncio.sleep(0.06)  # let the open log flush now and then

    opening = asyncio.create_task(keep_opening())
    seen: list[dict[str, Any]] = []
    cursor = None
    pages_while_opening = 0
    while True:
        status, records, cursor = await page(client, cursor, 7)
        assert status == 200
        seen.extend(records)
        if opening.done():
            if not records:
                await client.app[OPEN_LOG].flush()  # anything still queued
                status, records, cursor = await page(client, cursor, 7)
                seen.extend(records)
                if not records:
                    break
        else:
            pages_while_opening += 1
            await asyncio.sleep(0.01)
    await opening
    assert pages_while_opening > 1, "the opens ended before the reading began"
    assert sorted(r["recipient"] for r in seen) == sorted(recipients)
    ids = [r["id"] for r in seen]
    # An id is the stream entry's (`ms-seq`) and the record's place in it.
    order = [tuple(int(n) for n in re.split(r"[-.]", i)) for i in ids]
    assert order == sorted(order)
    assert len(set(ids)) == len(ids)
    # Caught up: an empty page, and the same cursor again.
    status, records, again = await page(client, cursor, 7)
    assert (status, records, again) == (200, [], cursor)


async def test_a_cursor_older_than_the_records_kept_answers_410(
    make_client: Any, settings: Settings
) -> None:
    client = await make_client(replace(settings, records_max=5))
    await put_block(client, "offer", offer())
    for i in range(3):
        await open_as(client, signed(f"/i/offer.png?r=early{i}&m.v=a"), IPHONE_MAIL)
    await client.app[OPEN_LOG].flush()
    status, first, cursor = await page(client, None, 1)
    assert status == 200
    assert [r["recipient"] for r in first] == ["early0"]
    for i in range(10):
        await open_as(client, signed(f"/i/offer.png?r=late{i}&m.v=a"), IPHONE_MAIL)
    await client.app[OPEN_LOG].flush()
    # early1 and early2 were trimmed before this reader got to them.
    response = await client.get(f"/api/v1/records?after={cursor}", headers=AUTH)
    assert response.status == 410
    error = (await response.json())["error"]
    assert error["code"] == "cursor_expired"
    assert error["details"][0]["field"] == "after"
    # Starting again reads what is kept: the newest records, at least five (a flush's
    # batch is kept or trimmed whole, so the newest five and the rest of their batches).
    status, kept, _ = await page(client, None, 100)
    recipients = [r["recipient"] for r in kept]
    assert len(recipients) >= 5
    assert recipients == [f"late{i}" for i in range(10 - len(recipients), 10)]


async def test_records_older_than_the_retention_are_trimmed_and_their_cursors_refused(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "offer", offer())
    old = datetime.now(UTC) - timedelta(days=31)  # the retention is 30 days
    old_id = f"{int(old.timestamp() * 1000)}-0"
    record = human_record("open", "offer", "a", "old", old)
    async with aioredis.from_url(redis_url) as store:
        await store.xadd(STREAM_KEY, {"n": 1, "r": encode_batch([record])}, old_id)
        await store.incr(COUNT_KEY)
    status, records, _ = await page(client, None, 10)
    assert [r["recipient"] for r in records] == ["old"]
    await open_as(client, signed("/i/offer.png?r=new&m.v=a"), IPHONE_MAIL)
    await client.app[OPEN_LOG].flush()
    status, records, _ = await page(client, None, 10)
    assert [r["recipient"] for r in records] == ["new"]
    assert (await client.get("/api/v1/records?after=0-0", headers=AUTH)).status == 410
    # The old record's own entry, read to its end, missed nothing: it still reads on.
    status, records, _ = await page(client, old_id, 10)
    assert status == 200
    assert [r["recipient"] for r in records] == ["new"]


async def test_bad_cursors_and_limits_are_refused_naming_the_field(
    client: TestClient[Any, Any],
) -> None:
    for query, field in [
        ("after=yesterday", "after"),
        ("after=1-2-3", "after"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
    ]:
        response = await client.get(f"/api/v1/records?{query}", headers=AUTH)
        assert await refused_fields(response) == [field], query
    # Nothing recorded yet: an empty page whose cursor is before everything.
    status, records, cursor = await page(client, None, 10)
    assert (status, records, cursor) == (200, [], "0-0")
