"""The load-test tools themselves: a seeded population, the load generator, CPU figures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web

from loadtest import loadgen
from loadtest.cpu import CpuMeter, tree_cpu_s
from loadtest.population import Population
from server.signing import Signer


def test_the_population_is_the_same_for_the_same_seed() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    one, again, other = Population(100, seed=3), Population(100, seed=3), Population(100, seed=4)
    assert [one.profile(i) for i in range(100)] == [again.profile(i) for i in range(100)]
    assert [one.events(i, now) for i in range(100)] == [again.events(i, now) for i in range(100)]
    assert [one.profile(i) for i in range(100)] != [other.profile(i) for i in range(100)]
    # Some recipients have no first name, so defaults get exercised.
    assert any("first_name" not in one.profile(i) for i in range(100))


def test_population_urls_are_signed_for_the_service() -> None:
    signer = Signer(["k"])
    url = urlsplit(Population(10).image_url(signer, "hero", 3))
    assert url.path == "/i/hero.png"
    assert signer.verify(url.path, parse_qsl(url.query))


async def test_the_load_generator_counts_what_the_server_answers(aiohttp_server: Any) -> None:
    async def handle(request: web.Request) -> web.Response:
        variant = "a" if request.path == "/a" else "b"
        return web.Response(body=b"x" * 100, headers={"X-Atopen-Variant": variant})

    app = web.Application()
    app.router.add_get("/{name}", handle)
    server = await aiohttp_server(app)
    closed = await loadgen.run(
        "127.0.0.1", server.port, ["/a", "/b"], duration_s=0.3, connections=4
    )
    assert closed.errors == 0
    assert closed.statuses[200] == len(closed.latencies_s) > 10
    assert abs(closed.variants["a"] - closed.variants["b"]) <= 4
    opened = await loadgen.run("127.0.0.1", server.port, ["/a"], duration_s=0.5, rate=200)
    assert 60 <= len(opened.latencies_s) <= 110  # about 100 started at 200/s
    assert opened.percentile_ms(99) < loadgen.REQUEST_TIMEOUT_S * 1000


async def test_the_load_generator_reports_its_own_lateness_and_cpu(aiohttp_server: Any) -> None:
    """A busy generator delays requests and answers, and on the server's machine takes
    CPU from the server: its results say how much of both (its CPU is all of this
    process's, so the busy loop below counts too)."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"x")

    app = web.Application()
    app.router.add_get("/", handle)
    server = await aiohttp_server(app)

    async def busy_once() -> None:
        await asyncio.sleep(0.1)
        until = time.process_time() + 0.3
        while time.process_time() < until:  # a generator too busy to keep time
            pass

    busy = asyncio.ensure_future(busy_once())
    result = await loadgen.run("127.0.0.1", server.port, ["/"], duration_s=0.8, rate=100)
    await busy
    assert result.client_lag_ms(100) >= 250
    assert result.client_cpu_s >= 0.3
    assert loadgen.Result.combined([result, result]).client_cpu_s == 2 * result.client_cpu_s


# A grandchild that burns 0.3 s of CPU, says so with its pid, and stays alive to be measured.
BURN = (
    "import os, time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "print('burnt', os.getpid(), flush=True)\n"
    "time.sleep(60)\n"
)
# Its parent, doing nothing itself.
PARENT = (
    "import subprocess, sys, time\n"
    f"subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
    "time.sleep(60)\n"
)


@pytest.mark.slow
def test_cpu_of_a_process_tree_counts_its_descendants() -> None:
    child = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True
    )
    grandchild = None
    try:
        meter = CpuMeter((child.pid,))
        assert child.stdout is not None
        said, pid = meter.measure(child.stdout.readline).split()
        assert said == "burnt"
        grandchild = int(pid)
        spent = tree_cpu_s([child.pid])
        assert spent is not None
        assert spent >= 0.3
        assert meter.spent_s >= 0.25  # most of the burn happened while measured
        assert meter.per_request_us(1000) == meter.spent_s / 1000 * 1e6
    finally:
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.communicate()
