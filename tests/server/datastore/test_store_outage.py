"""The store goes away and comes back: `atopen serve` restarts its embedded store, and
meanwhile the API answers 503 with Retry-After, never 500, and opens answer images."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import AUTH, decode, put_block, signed
from test_workers import Served, serving, until_every_worker_serves

from server.api.openapi import DOCUMENT
from server.datastore.embedded_redis import EmbeddedRedis

# Bounded waits, far above what a restart takes, so a loaded machine does not fail them.
RECOVERY_S = 30.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`atopen serve` with two workers on its own embedded store (no ATOPEN_REDIS_URL)."""
    with serving("", tmp_path / "data", 2) as running:
        yield running


def store_pid(tmp_path: Path) -> int:
    return int((tmp_path / "data" / "redis" / "redis.pid").read_text())


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + RECOVERY_S
    while Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":  # exited; its parent, frozen, has not reaped it yet
            return
        assert time.monotonic() < deadline, f"process {pid} did not die"
        time.sleep(0.02)


async def until_ready(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + RECOVERY_S
    while True:
        async with session.get(f"{base}/readyz") as r:
            if r.status == 200:
                return
            assert r.status == 503, await r.text()
        assert time.monotonic() < deadline, "/readyz never recovered"
        await asyncio.sleep(0.1)


async def put_profile(session: aiohttp.ClientSession, base: str, rid: str, name: str) -> int:
    async with session.put(
        f"{base}/api/v1/profiles/{rid}", json={"first_name": name}, headers=AUTH
    ) as r:
        return r.status


async def first_name(session: aiohttp.ClientSession, base: str, rid: str) -> str | None:
    async with session.get(f"{base}/api/v1/profiles/{rid}", headers=AUTH) as r:
        if r.status == 404:
            return None
        assert r.status == 200, await r.text()
        name: str = (await r.json())["profile"]["first_name"]
        return name


async def open_image(session: aiohttp.ClientSession, base: str, rid: str) -> tuple[int, int]:
    async with session.get(f"{base}{signed(f'/i/hello.png?r={rid}')}") as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        return decode(await r.read()).size


async def prepare(session: aiohttp.ClientSession, base: str) -> None:
    async with session.put(f"{base}/api/v1/blocks/hello", json=greeting(), headers=AUTH) as r:
        assert r.status in (200, 201), await r.text()
    assert await put_profile(session, base, "u1", "Ann") == 200
    await until_every_worker_serves(base, "/i/hello.png?r=u1", workers=2)


@pytest.mark.slow
async def test_a_killed_store_is_restarted_with_its_data(served: Served, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        await prepare(session, served.base)
        killed = store_pid(tmp_path)

        os.kill(killed, signal.SIGKILL)
        wait_until_gone(killed)

        assert await open_image(session, served.base, "u1") == (400, 100)
        await until_ready(session, served.base)
        assert store_pid(tmp_path) != killed
        # Acknowledged before the kill: in the append-only file, read back at the restart.
        assert await first_name(session, served.base, "u1") == "Ann"
        assert await put_profile(session, served.base, "u2", "Bo") == 200
        assert await first_name(session, served.base, "u2") == "Bo"
        assert await open_image(session, served.base, "u2") == (400, 100)


@pytest.mark.slow
async def test_writes_answer_503_while_the_store_is_down(served: Served, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        await prepare(session, served.base)
        killed = store_pid(tmp_path)
        # A frozen supervisor cannot restart its store: the outage lasts until it thaws.
        served.process.send_signal(signal.SIGSTOP)
        try:
            os.kill(killed, signal.SIGKILL)
            wait_until_gone(killed)

            async with session.get(f"{served.base}/readyz") as r:
                assert r.status == 503
                assert (await r.json())["checks"]["store"].startswith("unreachable")
            async with session.put(
                f"{served.base}/api/v1/profiles/u2", json={"first_name": "Bo"}, headers=AUTH
            ) as r:
                assert r.status == 503
                assert int(r.headers["Retry-After"]) >= 1
                assert r.content_type == "application/json"
                assert (await r.json())["error"]["code"] == "store_unavailable"
            assert await open_image(session, served.base, "u1") == (400, 100)
        finally:
            served.process.send_signal(signal.SIGCONT)

        await until_ready(session, served.base)
        assert await first_name(session, served.base, "u1") == "Ann"
        # The write answered 503 was not stored.
        assert await first_name(session, served.base, "u2") is None
        assert await put_profile(session, served.base, "u2", "Bo") == 200


WRITES: list[tuple[str, str, Any]] = [
    ("PUT", "/api/v1/profiles/u1", {"first_name": "Ann"}),
    ("PATCH", "/api/v1/profiles/u1", {"tier": "gold"}),
    ("DELETE", "/api/v1/profiles/u1", None),
    ("POST", "/api/v1/events", {"recipient": "u1", "type": "purchase"}),
    ("PUT", "/api/v1/inventory/sku-1", {"stock": 3}),
    ("POST", "/api/v1/inventory", [{"sku": "sku-2", "stock": 1}]),
    ("PUT", "/api/v1/blocks/hello", greeting()),
    ("DELETE", "/api/v1/blocks/hello", None),
    ("PUT", "/api/v1/stores/s1", {"name": "Centre", "address": "1 Main St", "lat": 52, "lon": 21}),
]


@pytest.mark.slow
async def test_every_write_answers_503_with_retry_after_when_the_store_is_gone(
    make_client: Any, own_store: EmbeddedRedis
) -> None:
    client: TestClient[Any, Any] = await make_client(store_url=own_store.url)
    await put_block(client, "hello", greeting())
    assert (await client.get("/readyz")).status == 200
    own_store.stop()
    for method, path, body in WRITES:
        response = await client.request(method, path, json=body, headers=AUTH)
        assert response.status == 503, f"{method} {path}: {await response.text()}"
        assert int(response.headers["Retry-After"]) >= 1
        error = (await response.json())["error"]
        assert error["code"] == "store_unavailable"
        assert error["message"]
        assert error["details"] == []
    assert (await client.get("/readyz")).status == 503
    # Opens answer without the store: the block's default image.
    response = await client.get(signed("/i/hello.png?r=u1"))
    assert response.status == 200
    assert response.headers["X-Atopen-Variant"] == "default"
    assert decode(await response.read()).size == (400, 100)


def test_the_document_lists_503_with_retry_after_for_every_write() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    paths = document["paths"]
    templates = {
        "/api/v1/profiles/u1": "/api/v1/profiles/{rid}",
        "/api/v1/events": "/api/v1/events",
        "/api/v1/inventory/sku-1": "/api/v1/inventory/{sku}",
        "/api/v1/inventory": "/api/v1/inventory",
        "/api/v1/blocks/hello": "/api/v1/blocks/{id}",
        "/api/v1/stores/s1": "/api/v1/stores/{id}",
    }
    for method, path, _ in WRITES:
        answer = paths[templates[path]][method.lower()]["responses"]["503"]
        while "$ref" in answer:
            answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        assert "Retry-After" in answer["headers"], f"{method} {path}"
