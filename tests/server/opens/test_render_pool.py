"""The render pool's admission: a full queue, and renders that could not finish in time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from server.opens.render_pool import TURNS_PER_THREAD, OverloadedError, RenderPool

PoolMaker = Callable[[int], RenderPool]


@pytest.fixture
def release() -> threading.Event:
    """What a test's stand-in for a long render waits for."""
    return threading.Event()


@pytest.fixture
def one_thread_pool(release: threading.Event) -> Iterator[PoolMaker]:
    """Makes pools of one thread that hold up to `max_waiting` renders. At the end
    `release` is set, so that no render still waits, and the pools shut down."""
    pools: list[RenderPool] = []

    def make(max_waiting: int) -> RenderPool:
        pools.append(RenderPool(threads=1, max_waiting=max_waiting))
        return pools[-1]

    yield make
    release.set()
    for pool in pools:
        pool.shutdown()


def burn(seconds: float) -> None:
    """A render's stand-in that takes the CPU, as drawing does (sleeping takes none)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_free_thread_renders_even_when_the_average_says_it_cannot_finish(
    one_thread_pool: PoolMaker,
) -> None:
    pool = one_thread_pool(4)
    await pool.run(lambda: burn(0.5))  # one slow render: the average is 25 ms
    soon = time.monotonic() + 0.02
    assert pool.refusal(soon) is None
    assert await pool.run(lambda: "drawn", deadline=soon) == "drawn"


async def test_a_render_that_would_wait_past_its_deadline_is_refused(
    one_thread_pool: PoolMaker, release: threading.Event
) -> None:
    pool = one_thread_pool(4)
    await pool.run(lambda: burn(0.5))  # the average is 25 ms of CPU
    busy = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0)  # it holds the only thread
    assert pool.refusal(time.monotonic() + 0.02) == "no time left to render"
    with pytest.raises(OverloadedError, match="no time left"):
        await pool.run(lambda: "drawn", deadline=time.monotonic() + 0.02)
    # With time enough, it waits its turn.
    later = asyncio.ensure_future(pool.run(lambda: "drawn", deadline=time.monotonic() + 60))
    release.set()
    assert await later == "drawn"
    await busy


async def test_an_open_is_let_in_only_with_a_quarter_of_its_time_to_spare(
    one_thread_pool: PoolMaker, release: threading.Event
) -> None:
    """What the CPU time of renders leaves out (the open's store read, rules, answer)
    takes the rest: admitted opens reach their turn before their deadline."""
    pool = one_thread_pool(4)
    await pool.run(lambda: burn(0.5))  # the average is 25 ms of CPU
    busy = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0)
    # The next render would end in 50 ms: within 60 ms, but not within three quarters.
    assert pool.predicted_s() == pytest.approx(0.05, rel=0.01)
    assert pool.refusal(time.monotonic() + 0.06) == "no time left to render"
    assert pool.refusal(time.monotonic() + 0.2) is None
    release.set()
    await busy


async def test_threads_beyond_the_cpus_do_not_make_the_queue_look_faster(
    release: threading.Event,
) -> None:
    """Two threads sharing one CPU draw no faster than one: the wait ahead of an open is
    predicted at the pace of the CPU, or the queue would let in twice what it can draw
    in time."""
    pools = [RenderPool(threads=2, cpus=1, max_waiting=8), RenderPool(threads=2, max_waiting=8)]
    waits, busy = [], []
    try:
        for pool in pools:
            await pool.run(lambda: burn(0.5))  # the average is 25 ms of CPU
            busy += [asyncio.ensure_future(pool.run(release.wait)) for _ in range(4)]
            await asyncio.sleep(0)
            waits.append(pool.predicted_s())
        # Four places taken, two threads: three renders ahead of the next, then its own.
        assert waits[0] == pytest.approx(4 * 0.025, rel=0.01)  # at one CPU's pace
        assert waits[1] == pytest.approx((3 / 2 + 1) * 0.025, rel=0.01)  # two CPUs'
    finally:
        release.set()
        await asyncio.gather(*busy)
        for pool in pools:
            pool.shutdown()


async def test_a_full_queue_is_refused_whatever_the_deadline(
    one_thread_pool: PoolMaker, release: threading.Event
) -> None:
    pool = one_thread_pool(1)
    running = asyncio.ensure_future(pool.run(release.wait))
    waiting = asyncio.ensure_future(pool.run(lambda: "second"))
    await asyncio.sleep(0)
    assert pool.refusal() == "render queue full"
    with pytest.raises(OverloadedError, match="queue full"):
        await pool.run(lambda: "third")
    release.set()
    await running
    assert await waiting == "second"


async def test_a_place_taken_before_the_render_counts_until_it_is_used_or_released(
    one_thread_pool: PoolMaker,
) -> None:
    pool = one_thread_pool(1)
    first, second = pool.admit(), pool.admit()
    assert pool.refusal() == "render queue full"
    with pytest.raises(OverloadedError, match="queue full"):
        pool.admit()
    # A render in its place needs no other: it runs although the queue is full.
    assert await pool.run(lambda: "drawn", place=first) == "drawn"
    assert not first.held
    assert pool.refusal() is None  # its place was given back when the render ended
    second.release()
    second.release()  # once only
    third, fourth = pool.admit(), pool.admit()
    assert pool.refusal() == "render queue full"
    third.release()
    fourth.release()


async def test_a_render_that_waits_without_the_cpu_does_not_make_the_queue_look_slow(
    one_thread_pool: PoolMaker, release: threading.Event
) -> None:
    """The wait ahead is predicted from the CPU renders take, not their wall time: when
    answering refused opens takes the CPU, renders take longer by the clock, and a
    prediction from that would refuse more opens, each of which takes more CPU."""
    pool = one_thread_pool(100)
    await pool.run(lambda: time.sleep(0.5))
    busy = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0)
    places = [pool.admit(time.monotonic() + 0.05) for _ in range(50)]
    assert len(places) == 50
    for place in places:
        place.release()
    release.set()
    await busy


async def test_turns_come_in_order_of_arrival_and_are_few(one_thread_pool: PoolMaker) -> None:
    pool = one_thread_pool(64)
    places = [pool.admit() for _ in range(TURNS_PER_THREAD + 3)]
    began: list[int] = []

    async def take(index: int) -> None:
        await places[index].turn(None)
        began.append(index)

    waiting = [asyncio.ensure_future(take(i)) for i in range(len(places))]
    await asyncio.sleep(0.01)
    # As many opens as the thread has turns read their data; the rest wait in line.
    assert began == list(range(TURNS_PER_THREAD))
    places[0].release()
    places[2].release()
    await asyncio.sleep(0.01)
    assert began == list(range(TURNS_PER_THREAD + 2))
    for place in places:
        place.release()
    await asyncio.gather(*waiting)
    assert began == list(range(len(places)))


async def test_an_open_whose_deadline_passed_in_line_gets_no_turn_to_spend(
    one_thread_pool: PoolMaker, release: threading.Event
) -> None:
    pool = one_thread_pool(64)
    await pool.run(lambda: burn(0.2))  # renders take CPU time: the average is 10 ms
    ahead = [pool.admit() for _ in range(TURNS_PER_THREAD)]
    for place in ahead:
        await place.turn(None)
    drawing = asyncio.ensure_future(pool.run(release.wait, place=ahead[0]))
    late = pool.admit()
    turn = asyncio.ensure_future(late.turn(time.monotonic() + 0.05))
    await asyncio.sleep(0.1)  # its deadline passes while the others hold the turns
    assert not turn.done()
    for place in ahead[1:]:
        place.release()
    with pytest.raises(OverloadedError, match="no time left when its turn came"):
        await turn
    late.release()
    # One with time enough is given its turn and draws.
    on_time = pool.admit()
    await on_time.turn(time.monotonic() + 60)
    release.set()
    await drawing
    assert await pool.run(lambda: "drawn", place=on_time) == "drawn"
