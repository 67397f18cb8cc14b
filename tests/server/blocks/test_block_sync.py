"""Block changes reach every running process by the time the write answers, with no store
read per open."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from sample_blocks import greeting
from support import AUTH, put_block, signed

from server.api.app_state import BLOCKS
from server.blocks.snapshot import BLOCKS_KEY, CHANNEL
from server.datastore.embedded_redis import EmbeddedRedis
from server.settings import Settings
from server.web.app import create_app

# Pub/sub delivers a change in milliseconds; the periodic resync would take 30 s. The
# bound tells the two apart without making a loaded machine fail the test.
PUBLISHED_WITHIN_S = 10.0


async def wait_for_variant(
    client: Any, url: str, expected: str, within_s: float = PUBLISHED_WITHIN_S
) -> float:
    """Seconds until `client` serves `expected` for `url` (fails after `within_s`)."""
    start = time.monotonic()
    while True:
        variant = (await client.get(url)).headers.get("X-Atopen-Variant")
        elapsed = time.monotonic() - start
        if variant == expected:
            return elapsed
        assert elapsed < within_s, f"still {variant!r} after {elapsed:.2f}s"
        await asyncio.sleep(0.02)


async def wait_for_status(
    client: Any, url: str, status: int, within_s: float = PUBLISHED_WITHIN_S
) -> None:
    start = time.monotonic()
    while (await client.get(url)).status != status:
        assert time.monotonic() - start < within_s
        await asyncio.sleep(0.02)


async def test_a_change_on_one_process_reaches_another(make_client: Any) -> None:
    writer = await make_client()
    reader = await make_client()
    await writer.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    url = signed("/i/promo.png?r=u1")

    await put_block(writer, "promo", greeting())
    await wait_for_variant(reader, url, "named")

    changed = greeting()
    changed["variants"][0]["when"] = "profile.first_name == 'Bob'"
    await put_block(writer, "promo", changed)
    await wait_for_variant(reader, url, "default")
    assert (await reader.get("/api/v1/blocks/promo", headers=AUTH)).status == 200
    body = await (await reader.get("/api/v1/blocks/promo", headers=AUTH)).json()
    assert body["version"] == 2

    assert (await writer.delete("/api/v1/blocks/promo", headers=AUTH)).status == 204
    await wait_for_status(reader, url, 404)


async def test_a_starting_process_loads_stored_blocks(make_client: Any) -> None:
    first = await make_client()
    await put_block(first, "promo", greeting())
    late = await make_client()
    assert (await late.get("/readyz")).status == 200
    response = await late.get(signed("/i/promo.png?r=u1"))
    assert response.status == 200


async def test_a_process_follows_changes_before_it_serves(
    aiohttp_client: Any, settings: Settings, redis_url: str
) -> None:
    """A block changed while a process starts must not be missed: before it accepts a
    connection, the store has its subscription to changes (and it synced after that)."""

    store = aioredis.from_url(redis_url)

    async def subscribers() -> int:
        return int(dict(await store.pubsub_numsub(CHANNEL))[CHANNEL.encode()])

    # The apps of earlier tests unsubscribe as they close, which the store may see a
    # moment later. Waiting for none also connects, so the count below is one round trip.
    deadline = time.monotonic() + PUBLISHED_WITHIN_S
    while await subscribers():
        assert time.monotonic() < deadline, "an earlier app never unsubscribed"
        await asyncio.sleep(0.05)
    app = create_app(settings, redis_url=redis_url)
    when_ready: list[int] = []

    async def record(app: web.Application) -> None:  # runs after the app's own startup
        when_ready.append(await subscribers())

    app.on_startup.append(record)
    try:
        await aiohttp_client(app)
    finally:
        await store.aclose()
    assert when_ready == [1]


async def test_a_stored_block_that_no_longer_compiles_keeps_the_others_serving(
    make_client: Any, redis_url: str
) -> None:
    first = await make_client()
    await put_block(first, "good", greeting())
    async with aioredis.from_url(redis_url) as store:
        record = {
            "version": 1,
            "updated_at": "2026-01-01T00:00:00+00:00",
            "definition": {"width": "wide"},
        }
        await store.hset(BLOCKS_KEY, "broken", orjson.dumps(record))
    late = await make_client()
    assert (await late.get(signed("/i/good.png?r=u1"))).status == 200
    assert (await late.get(signed("/i/broken.png?r=u1"))).status == 404


@pytest.mark.slow
async def test_a_process_started_without_its_store_catches_up_once_it_answers(
    make_client: Any, tmp_path: Path
) -> None:
    store = EmbeddedRedis(tmp_path / "late-store", persistent=False)
    store.start()
    url = store.url
    store.stop()
    # It starts all the same (not ready), and answers images with what it can.
    late = await make_client(store_url=url)
    assert (await late.get("/readyz")).status == 503
    assert (await late.get(signed("/i/promo.png?r=u1"))).status == 404
    store.start()
    try:
        assert store.url == url
        writer = await make_client(store_url=url)
        await put_block(writer, "promo", greeting())
        # The change feed reconnects (backing off up to 5 s) and loads what it missed.
        await wait_for_status(late, signed("/i/promo.png?r=u1"), 200)
        assert (await late.get("/readyz")).status == 200
    finally:
        store.stop()


class HoldingProxy:
    """A TCP proxy in front of the store that can hold back the answers on the connection
    that sends a given command: a read the store answers now, delivered later."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream = urlsplit(upstream_url)
        self._hold_on: bytes | None = None
        self.holding = asyncio.Event()  # an answer is being held back
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        # A unix URL's path is its socket, so its database is in the query.
        path = "" if self._upstream.scheme == "unix" else self._upstream.path
        database = parse_qs(self._upstream.query).get("db", [""])[0] or path.strip("/") or "0"
        credentials = self._upstream.netloc.rpartition("@")[0]
        at = f"{credentials}@" if credentials else ""
        self.url = f"redis://{at}127.0.0.1:{port}/{database}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def hold_answers_to(self, command: bytes) -> None:
        self._hold_on = command

    def release(self) -> None:
        self._hold_on = None
        self._released.set()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._upstream.scheme == "unix":
            up_reader, up_writer = await asyncio.open_unix_connection(self._upstream.path)
        else:
            host, port = self._upstream.hostname, self._upstream.port or 6379
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers += (writer, up_writer)
        held = asyncio.Event()  # this connection sent the command: hold what it gets

        async def to_store() -> None:
            while data := await reader.read(65536):
                if self._hold_on is not None and self._hold_on in data.upper():
                    held.set()
                up_writer.write(data)
            up_writer.close()

        async def from_store() -> None:
            while data := await up_reader.read(65536):
                if held.is_set() and not self._released.is_set():
                    self.holding.set()
                    await self._released.wait()
                writer.write(data)
            writer.close()

        for pump in (to_store(), from_store()):
            task = asyncio.ensure_future(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)


async def test_a_resync_read_before_a_change_here_does_not_undo_it(
    make_client: Any, redis_url: str
) -> None:
    async with HoldingProxy(redis_url) as proxy:
        client = await make_client(store_url=proxy.url)
        blocks = client.app[BLOCKS]
        for block_id in ("changed", "deleted"):
            await put_block(client, block_id, greeting())
        # A full resync reads every block: the store answers before the changes below
        # are made here, and the answer arrives after them.
        proxy.hold_answers_to(b"HGETALL")
        resync = asyncio.ensure_future(blocks.sync_all())
        await asyncio.wait_for(proxy.holding.wait(), PUBLISHED_WITHIN_S)
        await put_block(client, "changed", greeting("Hi {{ profile.first_name }}"))
        await put_block(client, "created", greeting())
        assert (await client.delete("/api/v1/blocks/deleted", headers=AUTH)).status == 204
        proxy.release()
        await resync

        changed = blocks.get("changed")
        assert changed is not None
        assert changed.block.version == 2
        assert blocks.get("created") is not None
        assert blocks.get("deleted") is None
        # The next resync reads what the changes left, and agrees.
        await blocks.sync_all()
        assert [p.block.id for p in blocks.all()] == ["changed", "created"]
        await client.close()  # before its store's proxy goes
