"""The render pool's admission: a full queue, and renders that could not finish in time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.opens.render_pool import TURNS_PER_THREAD, OverloadedError, RenderPool


def burn(seconds: float) -> None:
    """A render's stand-in that takes the CPU, as drawing does (sleeping takes none)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_free_thread_renders_even_when_the_average_says_it_cannot_finish() -> None:
    pool = RenderPool(threads=1, max_waiting=4)
    try:
        await pool.run(lambda: burn(0.5))  # one slow render: the average is 25 ms
        soon = time.monotonic() + 0.02
        assert pool.refusal(soon) is None
        assert await pool.run(lambda: "drawn", deadline=soon) == "drawn"
    finally:
        pool.shutdown()


async def test_a_render_that_would_wait_past_its_deadline_is_refused() -> None:
    pool = RenderPool(threads=1, max_waiting=4)
    release = threading.Event()
    try:
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
    finally:
        release.set()
        pool.shutdown()


async def test_a_full_queue_is_refused_whatever_the_deadline() -> None:
    pool = RenderPool(threads=1, max_waiting=1)
    release = threading.Event()
    try:
        running = asyncio.ensure_future(pool.run(release.wait))
        waiting = asyncio.ensure_future(pool.run(lambda: "second"))
        await asyncio.sleep(0)
        assert pool.refusal() == "render queue full"
        with pytest.raises(OverloadedError, match="queue full"):
            await pool.run(lambda: "third")
        release.set()
        await running
        assert await waiting == "second"
    finally:
        release.set()
        pool.shutdown()


async def test_a_place_taken_before_the_render_counts_until_it_is_used_or_released() -> None:
    pool = RenderPool(threads=1, max_waiting=1)
    try:
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
    finally:
        pool.shutdown()


async def test_a_render_that_waits_without_the_cpu_does_not_make_the_queue_look_slow() -> None:
    """The wait ahead is predicted from the CPU renders take, not their wall time: when
    answering refused opens takes the CPU, renders take longer by the clock, and a
    prediction from that would refuse more opens, each of which takes more CPU."""
    pool = RenderPool(threads=1, max_waiting=100)
    release = threading.Event()
    try:
        await pool.run(lambda: time.sleep(0.5))
        busy = asyncio.ensure_future(pool.run(release.wait))
        await asyncio.sleep(0)
        places = [pool.admit(time.monotonic() + 0.05) for _ in range(50)]
        assert len(places) == 50
        for place in places:
            place.release()
        release.set()
        await busy
    finally:
        release.set()
        pool.shutdown()


async def test_turns_come_in_order_of_arrival_and_are_few() -> None:
    pool = RenderPool(threads=1, max_waiting=64)
    try:
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
    finally:
        pool.shutdown()


async def test_an_open_whose_deadline_passed_in_line_gets_no_turn_to_spend() -> None:
    pool = RenderPool(threads=1, max_waiting=64)
    release = threading.Event()
    try:
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
    finally:
        release.set()
        pool.shutdown()
