"""What a `PUT` or `DELETE` of a block answered, the very next open sees, on every worker.

A change reaches each worker's snapshot through pub/sub; the write answers only once
every live worker says its snapshot holds the change (or after a timeout, which the log
explains), so no open after the answer can get the 404 pixel or the previous version.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from sample_blocks import greeting
from support import AUTH, decode, put_block, signed
from test_workers import serving, worker_pid

from server.datastore import worker_presence
from server.datastore.worker_presence import APPLIED_KEY, WORKERS_KEY

# Slow, left out of `make test-fast`: they start `atopen serve` with its worker processes.
pytestmark = pytest.mark.slow

OPENS = 60
IMAGE = "/i/fresh.png?r=u1"


def version(name: str) -> dict[str, Any]:
    """The test block, its one variant named `name` (how an open tells versions apart)."""
    block = greeting()
    block["variants"][0]["name"] = name
    return block


async def open_on_a_new_connection(base: str) -> tuple[int, int, str | None]:
    """One open on its own connection (so the kernel picks a worker for it), then ask
    that connection's worker who it is: (pid, status, variant)."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}{signed(IMAGE)}") as response:
            status, variant = response.status, response.headers.get("X-Atopen-Variant")
            body = await response.read()
        if status == 200:
            assert decode(body).size == (400, 100)
        return await worker_pid(session, base), status, variant


async def opens_right_now(base: str) -> Counter[tuple[int, str | None]]:
    """`OPENS` opens at once: how many each (status, variant) got, and by how many workers."""
    answers = await asyncio.gather(*(open_on_a_new_connection(base) for _ in range(OPENS)))
    workers = {pid for pid, _, _ in answers}
    assert len(workers) == 2, f"only worker {workers} answered: the test shows nothing"
    return Counter((status, variant) for _, status, variant in answers)


async def add_reader(base: str) -> None:
    """The recipient of the test's opens, whose name the block's variant shows."""
    url, profile = f"{base}/api/v1/profiles/u1", {"first_name": "Ann"}
    async with (
        aiohttp.ClientSession() as session,
        session.put(url, json=profile, headers=AUTH) as response,
    ):
        assert response.status == 200


async def write(base: str, method: str, definition: dict[str, Any] | None = None) -> int:
    """`PUT` (with `definition`) or `DELETE` the test block: the answer's status."""
    url = f"{base}/api/v1/blocks/fresh"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=definition, headers=AUTH) as response,
    ):
        return response.status


async def workers_answering(
    base: str, count: int, besides: frozenset[int] = frozenset()
) -> set[int]:
    """The pids of `count` workers answering on new connections, none of them in `besides`
    (a worker being replaced takes a moment to listen)."""
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    while len(pids - besides) < count:
        assert time.monotonic() < deadline, f"only workers {pids} answered"
        try:
            async with aiohttp.ClientSession() as fresh:
                pids.add(await worker_pid(fresh, base))
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    return pids - besides


async def test_every_worker_serves_a_change_at_the_next_open(
    redis_url: str, tmp_path: Path
) -> None:
    with serving(redis_url, tmp_path / "data", 2) as served:
        base = served.base
        await add_reader(base)
        await workers_answering(base, 2)  # the second may still be starting
        assert await write(base, "PUT", version("first")) == 201
        assert await opens_right_now(base) == {(200, "first"): OPENS}

        assert await write(base, "PUT", version("second")) == 200
        assert await opens_right_now(base) == {(200, "second"): OPENS}

        assert await write(base, "DELETE") == 204
        assert await opens_right_now(base) == {(404, None): OPENS}


async def test_a_killed_worker_does_not_hold_up_a_change(redis_url: str, tmp_path: Path) -> None:
    """A worker killed outright never says it has a change: the write waits for it only
    until its heartbeat goes stale, and the worker that replaces it serves the change."""
    with serving(redis_url, tmp_path / "data", 2) as served:
        base = served.base
        await add_reader(base)
        first, second = sorted(await workers_answering(base, 2))
        os.kill(first, signal.SIGKILL)
        assert await write(base, "PUT", version("first")) == 201
        await workers_answering(base, 1, besides=frozenset({first, second}))
        assert await opens_right_now(base) == {(200, "first"): OPENS}


async def test_another_server_serves_a_change_at_its_next_open(make_client: Any) -> None:
    writer = await make_client()
    reader = await make_client()
    await writer.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    url = signed(IMAGE)

    await put_block(writer, "fresh", version("first"))
    assert (await reader.get(url)).headers["X-Atopen-Variant"] == "first"
    await put_block(writer, "fresh", version("second"))
    assert (await reader.get(url)).headers["X-Atopen-Variant"] == "second"
    assert (await writer.delete("/api/v1/blocks/fresh", headers=AUTH)).status == 204
    assert (await reader.get(url)).status == 404


async def store_commands(store: aioredis.Redis) -> int:
    stats = await store.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def test_opens_of_unknown_blocks_do_not_reach_the_store(
    make_client: Any, redis_url: str
) -> None:
    client = await make_client()
    await put_block(client, "fresh", version("first"))
    ids = [secrets.token_hex(8) for _ in range(2000)]
    async with aioredis.from_url(redis_url) as store:
        before = await store_commands(store)
        for start in range(0, len(ids), 100):
            answers = await asyncio.gather(
                *(client.get(signed(f"/i/{i}.png?r=u1")) for i in ids[start : start + 100])
            )
            assert {a.status for a in answers} == {404}
        spent = await store_commands(store) - before
    # Only what runs in the background anyway (a heartbeat a second, this count itself).
    assert spent < 50, f"{spent} store commands for {len(ids)} unknown ids"


async def store_time(store: aioredis.Redis) -> float:
    seconds, micros = await store.time()
    return seconds + micros / 1e6


async def test_a_stale_worker_is_not_waited_for(
    make_client: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that stopped without leaving (killed, its machine gone) has a heartbeat
    older than the staleness window: a write does not wait for it at all."""
    client = await make_client()
    async with aioredis.from_url(redis_url) as store:
        now = await store_time(store)
        await store.zadd(WORKERS_KEY, {"gone:1:dead": now - worker_presence.STALE_AFTER_S - 1})
        await store.hset(APPLIED_KEY, "gone:1:dead", 0)
    with caplog.at_level(logging.WARNING, logger="atopen.blocks"):
        await put_block(client, "fresh", version("first"))
        assert (await client.delete("/api/v1/blocks/fresh", headers=AUTH)).status == 204
    assert "gone:1:dead" not in caplog.text


async def test_a_worker_that_never_acknowledges_is_waited_for_only_up_to_a_timeout(
    make_client: Any,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that looks alive but never takes the change (its change feed is cut, say):
    the write answers after the timeout all the same, and the log names that worker."""
    monkeypatch.setattr(worker_presence, "ACK_TIMEOUT_S", 0.3)
    client = await make_client()
    async with aioredis.from_url(redis_url) as store:
        # Its heartbeat stays fresh for longer than the test runs.
        await store.zadd(WORKERS_KEY, {"stuck:2:feed": await store_time(store) + 3600})
    url = signed(IMAGE)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    with caplog.at_level(logging.WARNING, logger="atopen.blocks"):
        await put_block(client, "fresh", version("first"))
    assert (await client.get(url)).headers["X-Atopen-Variant"] == "first"
    [record] = [r for r in caplog.records if "stuck:2:feed" in r.getMessage()]
    assert "fresh" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atopen.blocks"):
        assert (await client.delete("/api/v1/blocks/fresh", headers=AUTH)).status == 204
    assert (await client.get(url)).status == 404
    assert "stuck:2:feed" in caplog.text
