"""Rendering off the event loop, in a bounded pool that serves in order of arrival and
refuses, at once, only the opens it could not serve before their deadline.

Image work is CPU-bound: run on the loop, one render would stall every other open. The
pool runs a fixed number of renders at once; the others wait their turn, first come
first served. An open is admitted when the wait ahead of it, predicted from the CPU
time of recent renders, would take at most three quarters of the time it has left;
otherwise it is refused at once and answered with the pre-rendered default (counted).

Why first come first served with a predicted wait, and not a short fixed queue or
adaptive LIFO: mail clients and their proxies wait seconds for an image, so a queue
that drains within the deadline holds readers who will all still be there to see their
image. Refusing them instead only sends them back sooner (a proxy, or a closed-loop
client, asks again at once), and each refusal is CPU taken from the renders: a short
queue under 128 connections served the default to 99 % of them while drawing a twelfth
of its capacity. LIFO would serve the newest first, but make the oldest wait out their
whole deadline before getting the default.

Why the margin: the renders' CPU time leaves out what an open costs the event loop (its
store read, rules, answer), so a queue sized by it to the whole deadline holds more
than the deadline drains, and its last opens reach their turn with no time left.
Sized to three quarters of it, they reach their turn with time to spare. Why not the
measured drain rate instead: refused opens that come straight back slow the drain, a
queue sized by it shrinks under them, and more are refused (see `_cpu_s`).

An open that will most likely render takes its place in the queue when it starts
(`admit`), before reading the store: the opens that start in the same moment then see
each other, instead of all finding room, all doing their reads and rules, and all but
one being refused at the pool with that work wasted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from server import metrics

T = TypeVar("T")
# Weight of the newest sample in the running averages of render time and turn time.
_SMOOTHING = 0.05
# The share of an open's time left that the wait ahead of it may take when it is
# admitted: the rest absorbs what the prediction leaves out, so that admitted opens
# reach their turn in time rather than at the edge of their deadline.
WAIT_SHARE = 0.75
# Opens whose data is read, decided and drawn at once, per render thread: enough that a
# thread never waits for the next one's store round trip; the others wait in line having
# spent nothing, and those whose deadline passes in line get the default for nothing.
TURNS_PER_THREAD = 4


class OverloadedError(Exception):
    """No room to render in time; the caller serves the default."""


class Place:
    """A place in the pool's queue, held from admission until the render it was taken for
    ends, or until released unused (the open found its image in a cache)."""

    __slots__ = ("_pool", "_turn_began", "held")

    def __init__(self, pool: RenderPool) -> None:
        self._pool = pool
        self.held = True
        self._turn_began: float | None = None

    async def turn(self, deadline: float | None) -> None:
        """Wait, first come first served, until this open is one of the few whose data is
        read and whose image is drawn next; OverloadedError when by then too little of
        its deadline is left to draw it, so that no store read or rule is spent on it."""
        pool = self._pool
        await pool._turns.acquire()
        pool._turns_taken += 1
        self._turn_began = now = time.monotonic()
        if deadline is not None and now + pool.turn_s() > deadline:
            raise OverloadedError("no time left when its turn came")

    def drawn(self) -> None:
        """Its image is drawn: how long its turn took counts for the turns to come."""
        if self._turn_began is not None:
            self._pool._turn_took(time.monotonic() - self._turn_began)

    def release(self) -> None:
        if self.held:
            self.held = False
            self._pool._leave()
        if self._turn_began is not None:
            self._turn_began = None
            self._pool._turns_taken -= 1
            self._pool._turns.release()


class RenderPool:
    """`threads` renders at once, and at most `max_waiting` more opens holding a place (a
    bound on memory, not on time: time is bounded by each open's deadline).

    The renders share `cpus` CPUs (unless given, one per thread; a fraction of one when
    the worker shares a CPU with others): more threads than CPUs keep the CPUs busy while
    a render has let go of the interpreter lock, but do not draw faster than the CPUs do,
    so the wait ahead of an open is predicted at the pace of the fewer of the two."""

    def __init__(self, *, threads: int, max_waiting: int, cpus: float | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._threads = threads
        # How many renders' CPU time is spent at once: the pace of the queue.
        self._parallel = min(threads, cpus or threads)
        self._max_places = threads + max_waiting
        self._places = 0  # taken: renders to come, waiting for a thread or running
        self._rendering = 0  # of those, the renders waiting for a thread or running
        # The recent CPU time of one render in its thread: the pool's pace when renders
        # get the CPU they need. Not the wall time: when refused opens come straight
        # back (a closed loop, a proxy retrying), answering them takes the CPU and the
        # wall time of renders grows; a wait predicted from that would refuse more,
        # which brings more back, down to a pool that draws a tenth of its capacity.
        self._cpu_s = 0.0
        self._turns = asyncio.Semaphore(threads * TURNS_PER_THREAD)
        self._turns_taken = 0
        # How long a turn took, from the moment it began to the image drawn: under load the
        # event loop and the renders share the interpreter and the machine, and this is
        # longer than the renders' CPU time.
        self._turn_wall_s = 0.0

    def admit(self, deadline: float | None = None) -> Place:
        """A place in the queue for a render to come; OverloadedError as `run` would."""
        refusal = self.refusal(deadline)
        if refusal is not None:
            raise OverloadedError(refusal)
        return self._take()

    def place(self, deadline: float | None = None) -> Place | None:
        """`admit`, but None for a refusal: refusing is the common case under overload,
        and the caller answers at once without an exception's cost."""
        return None if self.refusal(deadline) is not None else self._take()

    def _take(self) -> Place:
        self._places += 1
        metrics.QUEUE_DEPTH.inc()
        return Place(self)

    def _leave(self) -> None:
        self._places -= 1
        metrics.QUEUE_DEPTH.dec()

    async def run(
        self, work: Callable[[], T], *, deadline: float | None = None, place: Place | None = None
    ) -> T:
        """Run `work` in the pool, in `place` if one was taken for it (its admission
        already promised it a turn in time), else after admitting it now.

        `deadline` (a `time.monotonic()` instant) is when the render must have ended;
        OverloadedError when the renders ahead would not leave it time.
        """
        if place is None or not place.held:
            place = self.admit(deadline)
        self._rendering += 1
        try:
            loop = asyncio.get_running_loop()
            result, cpu_s = await loop.run_in_executor(self._executor, _timed, work)
            self._cpu_s += (cpu_s - self._cpu_s) * _SMOOTHING
            place.drawn()
            return result
        finally:
            self._rendering -= 1
            place.release()

    def refusal(self, deadline: float | None = None) -> str | None:
        """Why a render asked for now would be refused (see `run`); None if it would not."""
        if self._places >= self._max_places:
            return "render queue full"
        if deadline is not None:
            now = time.monotonic()
            if self.predicted_s() > (deadline - now) * WAIT_SHARE:
                return "no time left to render"
        return None

    def predicted_s(self) -> float:
        """How long from now until one more render would end, behind the places taken.

        A free thread starts it at once, whatever the average says: the render checks its
        deadline itself, and only renders that run can bring down an average that one
        slow render (fonts loaded on first use) pushed past every deadline."""
        ahead = self._places - self._threads + 1
        if ahead <= 0:
            return 0.0
        return (ahead / self._parallel + 1) * self._cpu_s

    def turn_s(self) -> float:
        """How long from now until an open given its turn now would be drawn: the turns
        ahead of it, then its own render."""
        by_cpu = ((self._turns_taken - 1) / self._parallel + 1) * self._cpu_s
        if not self._rendering:
            # Only turns that draw can bring down an average that a slow spell pushed
            # past every deadline: with none drawing, the CPU time alone decides.
            return by_cpu
        return max(by_cpu, self._turn_wall_s)

    def _turn_took(self, seconds: float) -> None:
        self._turn_wall_s += (seconds - self._turn_wall_s) * _SMOOTHING

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    """`work`'s result and the CPU time its thread spent on it."""
    started = time.thread_time()
    result = work()
    return result, time.thread_time() - started
