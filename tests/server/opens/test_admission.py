"""Right content under load: bursts below capacity are drawn for every reader, and a rule
that runs long does not stop the worker that runs it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sample_blocks import greeting
from support import AUTH, decode, put_block, signed
from test_serving import metric
from test_workers import serving, until_every_worker_serves

from server.api.app_state import BLOCKS
from server.opens.admit import Admission
from server.opens.loop_lag import LoopLag
from server.opens.render_pool import RenderPool
from server.settings import Settings

BURST = 60
# The burst tests run with the deadline an operator gets by default (the shared test
# server's is longer, for slow machines).
DEFAULT_DEADLINE_MS = str(Settings().render_deadline_ms)


def _spin(stop_at: float, cores: set[int] | None) -> None:
    if cores is not None:
        os.sched_setaffinity(0, cores)
    while time.monotonic() < stop_at:
        pass


@contextmanager
def other_work(processes: int, seconds: float, cores: set[int] | None = None) -> Iterator[None]:
    """The machine busy with something else: processes that take a core each, of `cores`
    if given (else of any)."""
    context = multiprocessing.get_context("spawn")
    stop_at = time.monotonic() + seconds
    workers = [context.Process(target=_spin, args=(stop_at, cores)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


@pytest.mark.slow
async def test_sixty_readers_opening_at_once_all_get_their_own_image(
    redis_url: str, tmp_path: Path
) -> None:
    """A burst the box draws in a fraction of a second is never shed, even while the
    machine runs other work: each reader, on a connection of their own, gets their name."""
    with serving(
        redis_url, tmp_path / "data", 2, ATOPEN_RENDER_DEADLINE_MS=DEFAULT_DEADLINE_MS
    ) as served:
        async with aiohttp.ClientSession() as session:
            async with session.put(
                f"{served.base}/api/v1/blocks/hello", json=greeting(), headers=AUTH
            ) as r:
                assert r.status in (200, 201), await r.text()
            for i in range(BURST):
                async with session.put(
                    f"{served.base}/api/v1/profiles/u{i}",
                    json={"first_name": f"Reader{i}"},
                    headers=AUTH,
                ) as r:
                    assert r.status == 200
        await until_every_worker_serves(served.base, "/i/hello.png?r=u0", workers=2)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as readers:

            async def open_as(i: int) -> tuple[int, str, bytes]:
                async with readers.get(f"{served.base}{signed(f'/i/hello.png?r=u{i}')}") as r:
                    return r.status, r.headers["X-Atopen-Variant"], await r.read()

            with other_work(processes=2, seconds=30):
                answers = await asyncio.gather(*(open_as(i) for i in range(BURST)))
    assert [status for status, _, _ in answers] == [200] * BURST
    assert [variant for _, variant, _ in answers] == ["named"] * BURST
    assert all(decode(body).size == (400, 100) for _, _, body in answers)


# A `when` that runs past its time budget (a hundred thousand items, twice over).
LOOPING_WHEN = "range(100000) | map('string') | map('length') | sum > 0 and range(100000) | sum"
# Ten billion turns printing nothing (the output cap would stop one that prints).
LOOPING_RULE = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{{ profile.first_name }}"
)


async def test_a_rule_that_loops_does_not_stop_health_checks_or_other_opens(
    make_client: Any, settings: Settings
) -> None:
    """The looping variant's rule runs off the event loop and is stopped at its budget;
    its block's default needs no render, so the open ends as soon as the rule does."""
    client = await make_client(replace(settings, render_deadline_ms=10_000))
    looping = greeting(LOOPING_RULE)
    await put_block(client, "looping", looping)
    await put_block(client, "hello", greeting())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ada"}, headers=AUTH)

    stuck = asyncio.ensure_future(client.get(signed("/i/looping.png?r=u1")))
    await asyncio.sleep(0.005)  # its rule is running
    health = await client.get("/healthz")
    # Answered while the looping rule was still running: on the event loop, the rule
    # would have held the health check until the open was answered.
    assert not stuck.done()
    assert health.status == 200
    other = await client.get(signed("/i/hello.png?r=u1"))
    assert other.headers["X-Atopen-Variant"] == "named"
    answer = await stuck
    # The looping variant fell through: the default, an image like any other.
    assert answer.status == 200
    assert answer.headers["X-Atopen-Variant"] == "default"
    assert decode(await answer.read()).size == (400, 100)


async def test_an_open_whose_turn_came_may_finish_half_its_deadline_late(
    client: Any,
) -> None:
    """Its turn is given only when its work should end by the deadline; when the work
    runs over a little, what it spent (store read, rules, render) is not thrown away."""
    await put_block(client, "hello", greeting())
    prepared = client.app[BLOCKS].get("hello")
    pool = RenderPool(threads=1, max_waiting=4)
    try:
        admitted = Admission(pool, LoopLag(), deadline_ms=2000).admit(prepared)
        assert admitted is not None
        assert admitted.place is not None  # drawn per recipient: it waits for a turn
        assert admitted.finish_by - admitted.deadline == pytest.approx(1.0)
        admitted.release()
    finally:
        pool.shutdown()


@pytest.mark.slow
async def test_an_open_waits_for_looping_rules_no_longer_than_its_deadline(
    make_client: Any, settings: Settings
) -> None:
    """Each rule stops at its budget, but forty of them in a row would take two seconds:
    the open gives up at its deadline (and the half of it an open whose turn came may
    run over) and answers the default, counted as a deadline
    (had it waited for the rules, it would have served the default's pre-render)."""
    client = await make_client(replace(settings, render_deadline_ms=300))
    block = greeting()
    looping = dict(block["variants"][0], when=LOOPING_WHEN)
    block["variants"] = [dict(looping, name=f"loop{i}") for i in range(40)]
    await put_block(client, "looping", block)
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ada"}, headers=AUTH)
    before = await metric(client, "atopen_fallbacks_total", reason="deadline")
    answer = await client.get(signed("/i/looping.png?r=u1"))
    assert answer.status == 200
    assert answer.headers["X-Atopen-Variant"] == "default"
    assert decode(await answer.read()).size == (400, 100)
    assert await metric(client, "atopen_fallbacks_total", reason="deadline") == before + 1
