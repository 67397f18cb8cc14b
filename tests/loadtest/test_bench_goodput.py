"""The goodput benchmark's own parts: reading goodput.lua's results, the table's figures,
the distinct readers it hands out, and the Lua script under wrk itself."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import redis
from aiohttp import web

from content_sources.redis_keys import profile_key
from loadtest.bench_goodput import (
    BareHandler,
    Bench,
    Layout,
    Outcome,
    Readers,
    Row,
    capacity,
    ceiling,
    format_row,
    open_connections,
    parse_outcome,
    run_wrk,
)
from loadtest.bench_serve import floor_server
from server.signing import Signer

# A result file as goodput.lua's done() writes it (an open-loop row at 500/s for 2 s,
# latencies cut to eight).
OPEN_RESULT = (
    "duration_us=2052717 threads=2 max_thread_sent=501 timeouts_pending=0 connect_errors=0 "
    "read_errors=0 write_errors=0 sent=1002 answered=1002 right=1002 default=0 other=0 "
    "non200=0 timeouts_answered=0 unmatched=0 repeats=0 late=0\n"
    "3694\n2377\n18433\n14654\n1671\n2084\n1529\n2379\n"
)
# An overloaded closed-loop row: most readers got the default, some waited too long.
OVERLOADED_RESULT = (
    "duration_us=5000000 threads=2 max_thread_sent=9000 timeouts_pending=24 connect_errors=0 "
    "read_errors=6 write_errors=0 sent=18000 answered=16976 right=2000 default=14970 other=0 "
    "non200=0 timeouts_answered=6 unmatched=0 repeats=0 late=0\n"
    + "".join(f"{200_000 + 1000 * i}\n" for i in range(100))
    + "".join(f"d{1000 + 10 * i}\n" for i in range(100))
)


def test_a_result_file_is_read_into_its_counts() -> None:
    out = parse_outcome(OPEN_RESULT)
    assert out.duration_s == pytest.approx(2.052717)
    assert (out.sent, out.answered, out.right, out.default) == (1002, 1002, 1002, 0)
    assert out.sent_rate == pytest.approx(1002 / 2.052717)
    assert out.right_rate == pytest.approx(1002 / 2.052717)
    assert out.share_right == 1.0
    assert out.right_latencies_us == (
        3694.0,
        2377.0,
        18433.0,
        14654.0,
        1671.0,
        2084.0,
        1529.0,
        2379.0,
    )
    assert out.right_ms(50) == pytest.approx(2.379)
    assert out.right_ms(99) == pytest.approx(18.433)
    # Two threads, each sent 501 of its lines: 1,002 lines of the file are used.
    assert out.lines_used(5000) == 1002
    assert out.lines_used(900) == 900


def test_the_share_right_counts_every_open_that_ended() -> None:
    out = parse_outcome(OVERLOADED_RESULT)
    assert out.errors == 6
    assert out.timeouts == 30  # answered late, or still waiting past the timeout at the end
    # Requests still young in flight when the run stopped are no one's answer yet.
    assert out.share_right == pytest.approx(2000 / (16976 + 6 + 24))
    assert out.right_ms(50) == pytest.approx(250.0)
    assert math.isnan(parse_outcome(OPEN_RESULT.split("\n")[0] + "\n\n").right_ms(99))


def test_the_defaults_latencies_are_read_apart_from_the_right_ones() -> None:
    out = parse_outcome(OVERLOADED_RESULT)
    assert len(out.right_latencies_us) == len(out.default_latencies_us) == 100
    assert out.default_ms(50) == pytest.approx(1.5)
    assert out.default_ms(99) == pytest.approx(1.99)
    assert math.isnan(parse_outcome(OPEN_RESULT).default_ms(99))


def row(label: str, result: str, target: float | None) -> Row:
    return Row(label, target, parse_outcome(result), wrk_cores=0.12, atopen_cores=1.8)


def test_capacity_is_the_best_closed_loop_row() -> None:
    closed = [row("closed 8", OPEN_RESULT, None), row("closed 512", OVERLOADED_RESULT, None)]
    opened = row("open 10x", OPEN_RESULT.replace("right=1002", "right=90000"), 5000.0)
    assert capacity([*closed, opened]) == pytest.approx(1002 / 2.052717)
    assert capacity([opened]) == 0.0


def test_a_row_shows_the_offered_rate_beside_the_one_achieved() -> None:
    opened = format_row(row("open 1x", OPEN_RESULT.replace("late=0", "late=100"), 500.0))
    assert "500" in opened
    assert "488" in opened  # sent per second
    assert "10.0%" in opened  # late sends
    closed = format_row(row("closed 512", OVERLOADED_RESULT, None))
    assert "11.8%" in closed  # right
    assert " - " in closed  # a closed loop offers no rate of its own
    repeated = format_row(row("closed 1024", OPEN_RESULT.replace("repeats=0", "repeats=7"), None))
    assert "7 sends repeated a reader" in repeated


def test_readers_are_distinct_signed_and_have_profiles(redis_url: str) -> None:
    signer = Signer(["k"])
    readers = Readers(signer, redis_url)
    first = readers.take(300)
    readers.used(120)
    second = readers.take(300)
    assert second[:180] == first[120:]  # what a row did not use goes to the next
    readers.used(300)
    every = first[:120] + second + readers.take(10)
    assert len(set(every)) == len(every) == 430
    url = urlsplit(every[-1])
    pairs = parse_qsl(url.query)
    assert signer.verify(url.path, pairs)
    recipient = dict(pairs)["r"]
    with redis.Redis.from_url(redis_url) as store:
        profile = store.get(profile_key(recipient))
    assert profile is not None
    assert orjson.loads(profile)["first_name"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (loadtest/install_tools.sh)")
@pytest.mark.parametrize("rate", [None, 300.0])
async def test_the_script_counts_what_the_server_answers(
    aiohttp_server: Any, tmp_path: Path, rate: float | None
) -> None:
    """Under wrk, in a closed and an open loop: every answer is counted once, as right or
    as the default by its variant header, and each right one has its latency."""

    async def handle(request: web.Request) -> web.Response:
        variant = "named" if int(request.query["r"]) % 3 else "default"
        headers = {"X-Atopen-Variant": variant}
        if "X-Request-Id" in request.headers:
            headers["X-Request-Id"] = request.headers["X-Request-Id"]
        return web.Response(body=b"x" * 100, headers=headers)

    app = web.Application()
    app.router.add_get("/i/x.png", handle)
    server = await aiohttp_server(app)
    paths = tmp_path / "paths.txt"
    paths.write_text("".join(f"/i/x.png?r={i}\n" for i in range(100_000)))
    # On a CPU of its own, as the benchmark runs it where there are two or more.
    generator = Layout.split(1).generator
    out, _, _ = await asyncio.to_thread(
        run_wrk, server.port, paths, tmp_path / "out.txt", 1, 8, rate, generator
    )
    assert isinstance(out, Outcome)
    assert out.answered > 0
    assert out.right + out.default == out.answered
    assert out.right > out.default > 0
    assert len(out.right_latencies_us) == out.right
    assert len(out.default_latencies_us) == out.default
    assert out.sent - out.answered <= 8  # at most one in flight per connection at the end
    assert out.errors == out.non200 == out.unmatched == out.repeats == out.timeouts == 0


def test_the_ceiling_is_what_refusals_leave_of_the_box() -> None:
    # Below capacity every open can be drawn.
    assert ceiling(1_000, 10_000, 600) == 600
    # At twice capacity, 1,000 refusals take a tenth of the box: 1,000 * 0.8 / 0.9.
    assert ceiling(1_000, 10_000, 2_000) == pytest.approx(888.9, abs=0.1)
    # Past what even a bare handler answers, nothing is left to draw with.
    assert ceiling(1_000, 10_000, 12_000) == 0


def test_an_open_loop_row_gets_the_connections_its_opens_hold() -> None:
    # Half of a 1,600/s capacity with a 1 s deadline: 800 held by admitted opens, 120 by
    # refusals' answers, 256 spare, rounded up to a multiple of 256.
    assert open_connections(800, 1_600, 1.0) == 1_280
    # Above capacity only the capacity's worth wait on renders; the rest are refused.
    assert open_connections(3_200, 1_600, 1.0) == 2_560
    # A longer deadline holds more, up to wrk's useful most.
    assert open_connections(3_200, 1_600, 2.0) == 4_096
    # A refused open's connection waits out the server's refusal pause before its next
    # send is read: 1,600 wait on renders, 3,200 x 0.4 s on refusals, 256 spare, rounded up.
    assert open_connections(3_200, 1_600, 1.0, 0.25) == 3_328
    assert open_connections(32_000, 1_600, 1.0, 0.25) == 6_144


def test_the_load_generator_gets_cpus_of_its_own_when_some_are_left_for_the_server() -> None:
    usable = frozenset(os.sched_getaffinity(0))
    assert Layout.split(0) == Layout(None, None)
    assert Layout.split(len(usable)) == Layout(None, None)  # none left for the server
    assert Layout.split(0).server_cpu_count() == len(usable)
    if len(usable) >= 2:
        layout = Layout.split(1)
        assert layout.server is not None
        assert layout.generator is not None
        assert len(layout.generator) == 1
        assert layout.server | layout.generator == usable
        assert not layout.server & layout.generator
        assert layout.server_cpu_count() == len(usable) - 1


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (loadtest/install_tools.sh)")
@pytest.mark.slow
def test_the_bare_handler_prices_an_answer_in_a_closed_and_an_open_loop(
    tmp_path: Path, redis_url: str
) -> None:
    """A closed loop's rate, and an open loop's rate at its CPU per answer: both of the
    real floor server under wrk, an open loop's answers dearer (each wakes the process)."""
    layout = Layout.split(1)
    with floor_server(b"\x89PNG default", 1, tmp_path) as floor:
        readers = Readers(Signer(["k"]), redis_url)
        bench = Bench(floor, readers, tmp_path, 1, 1.0, None, layout.generator)
        bare = BareHandler(floor, bench, layout.server_cpu_count())
        closed = bare.closed_rate()
        opened = bare.open_rate(200)
    assert closed > 200
    assert 0 < opened < closed
