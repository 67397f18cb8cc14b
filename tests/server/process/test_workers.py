"""`atopen serve --workers N` as a real process tree: shutdown and crash recovery."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, cast

import aiohttp
import orjson
import pytest
from sample_blocks import greeting
from support import AUTH, SECRET, TOKEN, decode, free_port, signed

from loadtest.bench_serve import atopen_server
from server.metrics import FLUSH_INTERVAL_S

# Slow, left out of `make test-fast`: they start `atopen serve` with its worker processes.
pytestmark = pytest.mark.slow

SLOW_TEXT = "{% for i in range(300) %}{{ profile.first_name }} {% endfor %}"


class Served(NamedTuple):
    process: subprocess.Popen[bytes]
    base: str  # the service
    metrics_base: str  # the metrics port


@contextmanager
def serving(redis_url: str, data_dir: Path, workers: int, **settings: str) -> Iterator[Served]:
    """`atopen serve --workers N` on a real port, sharing the test store."""
    metrics_port = free_port()
    defaults = {"ATOPEN_METRICS_PORT": str(metrics_port), "ATOPEN_RENDER_DEADLINE_MS": "20000"}
    # A test's own settings win over the defaults above.
    with atopen_server(
        redis_url, workers, data_dir, SECRET, TOKEN, **{**defaults, **settings}
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        yield Served(server.processes[0], base, f"http://127.0.0.1:{metrics_port}")


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    """A supervisor with two workers."""
    with serving(redis_url, tmp_path / "data", 2) as served:
        yield served


async def register_slow_block(session: aiohttp.ClientSession, base: str) -> None:
    block = greeting(SLOW_TEXT)
    block["width"], block["height"] = 1000, 1000
    block["variants"][0]["layers"][1].update(box=[0, 0, 1000, 1000], size=10)
    async with session.put(f"{base}/api/v1/blocks/slow", json=block, headers=AUTH) as r:
        assert r.status in (200, 201), await r.text()
    for i in range(10):
        profile = {"first_name": f"Reader{i}"}
        async with session.put(f"{base}/api/v1/profiles/u{i}", json=profile, headers=AUTH) as r:
            assert r.status == 200
    await until_every_worker_serves(base, "/i/slow.png", workers=2)


async def worker_pid(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/healthz") as r:
        return int((await r.json())["pid"])


async def until_every_worker_serves(base: str, path: str, workers: int) -> None:
    """Wait until each worker answers `path` with 200 (a block reaches each by its change
    feed, and preparing a large one takes a while). The kernel picks a worker for each new
    connection, so hold one connection at a time and ask on it until its worker answers."""
    ready: set[int] = set()
    deadline = time.monotonic() + 30
    while len(ready) < workers:
        assert time.monotonic() < deadline, f"only workers {ready} serve {path}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as pinned:
            pid = await worker_pid(pinned, base)
            if pid in ready:
                continue
            while True:
                async with pinned.get(f"{base}{signed(path)}") as r:
                    if r.status == 200:
                        break
                assert time.monotonic() < deadline, f"worker {pid} never served {path}"
                await asyncio.sleep(0.02)
            assert await worker_pid(pinned, base) == pid, "the connection was not kept"
            ready.add(pid)


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None, bytes]:
    async with session.get(url) as response:
        return response.status, response.headers.get("X-Atopen-Variant"), await response.read()


async def test_sigterm_lets_in_flight_requests_finish(
    server: Served,
) -> None:
    process, base, _ = server
    async with aiohttp.ClientSession() as session:
        await register_slow_block(session, base)
        # Unique recipients: nothing comes from a cache, every request renders.
        in_flight = [
            asyncio.create_task(fetch(session, f"{base}{signed(f'/i/slow.png?r=u{i}&dpr=3')}"))
            for i in range(8)
        ]
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*in_flight)
    for status, variant, body in results:
        assert status == 200
        assert variant == "named"
        assert decode(body).size == (3000, 3000)
    assert process.wait(timeout=30) == 0


async def test_a_killed_worker_is_replaced(server: Served) -> None:
    _, base, _ = server
    async with aiohttp.ClientSession() as session:
        await register_slow_block(session, base)
        pids: set[int] = set()
        for _ in range(200):
            # A new connection each time, so the kernel spreads them over the workers.
            async with aiohttp.ClientSession() as fresh:
                pids.add(await worker_pid(fresh, base))
            if len(pids) == 2:
                break
        assert len(pids) == 2, "requests never reached both workers"
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        failures = 0
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (seen - pids):
            try:
                async with aiohttp.ClientSession() as fresh:
                    seen.add(await worker_pid(fresh, base))
            except aiohttp.ClientError:
                failures += 1
            await asyncio.sleep(0.02)
        replacement = seen - pids
        assert replacement, "no new worker answered"
        assert victim not in seen
        # Only what the killed worker held can fail; the port never stops answering.
        assert failures <= 2
        status, variant, _ = await fetch(session, f"{base}{signed('/i/slow.png?r=u1')}")
        assert (status, variant) == (200, "named")


async def image_requests(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str] = AUTH
) -> float:
    async with session.get(f"{base}/metrics", headers=headers) as r:
        assert r.status == 200
        text = await r.text()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("atopen_requests_total{") and 'route="image"' in line
    )


async def settled_image_requests(session: aiohttp.ClientSession, base: str) -> float:
    """The count once every worker has written what it counted (they do once a second)."""
    deadline = time.monotonic() + 20
    counted = await image_requests(session, base)
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S * 1.5)
        again = await image_requests(session, base)
        if again == counted:
            return counted
        assert time.monotonic() < deadline, "the count never settled"
        counted = again


async def test_workers_share_one_metrics_view(server: Served) -> None:
    _, base, metrics_base = server
    async with aiohttp.ClientSession() as session:
        await register_slow_block(session, base)
        before = await settled_image_requests(session, base)
        answered: set[int] = set()
        for i in range(20):
            async with aiohttp.ClientSession() as fresh:
                await fetch(fresh, f"{base}{signed(f'/i/slow.png?r=u{i % 3}')}")
                answered.add(await worker_pid(fresh, base))
        # New connections reach both workers (all twenty to one: a chance in 500,000).
        assert len(answered) == 2, f"only {answered} answered"
        # Whichever worker answers /metrics, it counts the requests of both (each worker
        # writes its counts once a second).
        deadline = time.monotonic() + 10
        while (counted := await image_requests(session, base) - before) < 20:
            assert time.monotonic() < deadline, f"{counted} of 20 requests counted"
            await asyncio.sleep(0.2)
        assert counted == 20
        # The metrics port, which every worker listens on too, gives the same view with
        # no token, whichever worker a new connection reaches.
        for _ in range(10):
            async with aiohttp.ClientSession() as fresh:
                assert await image_requests(fresh, metrics_base, headers={}) == before + 20


def connections_opened(port: int, count: int, wait_s: float) -> int:
    """How many of `count` connections to `port` the kernel completes within `wait_s`."""
    selector = selectors.DefaultSelector()
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE)
            sockets.append(sock)
        opened = 0
        deadline = time.monotonic() + wait_s
        while opened < count and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fileobj)
                sock = cast(socket.socket, key.fileobj)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    opened += 1
        return opened
    finally:
        for sock in sockets:
            sock.close()
        selector.close()


@pytest.mark.parametrize(("backlog", "expected"), [(None, 300), ("8", range(1, 20))])
def test_connections_wait_for_a_busy_worker_up_to_the_listen_backlog(
    redis_url: str, tmp_path: Path, backlog: str | None, expected: int | range
) -> None:
    """A send's first wave opens connections faster than a busy worker accepts them: the
    kernel holds them for it (ATOPEN_LISTEN_BACKLOG) instead of dropping them."""
    settings = {} if backlog is None else {"ATOPEN_LISTEN_BACKLOG": backlog}
    with serving(redis_url, tmp_path / "data", 1, **settings) as served:
        health = f"{served.base}/healthz"
        with urllib.request.urlopen(health, timeout=10) as response:  # noqa: S310 - http://127.0.0.1
            worker = orjson.loads(response.read())["pid"]
        port = int(served.base.rsplit(":", 1)[1])
        os.kill(worker, signal.SIGSTOP)  # busy: accepts nothing
        try:
            opened = connections_opened(port, 300, wait_s=0.5)
        finally:
            os.kill(worker, signal.SIGCONT)
    if isinstance(expected, range):
        assert opened in expected
    else:
        assert opened == expected
