"""Rendering off the event loop, in a bounded pool that serves in order of arrival and
refuses, at once, only the opens it could not serve before their deadline.

Image work is CPU-bound: run on the loop, one render would stall every other open. The
pool runs a fixed number of renders at once; the others wait their turn, first come
first served. An open is admitted when the wait ahead of it, predicted from how fast
the pool has been finishing renders while it had a backlog, ends before its deadline;
otherwise it is refused at once and answered with the pre-rendered default (counted).

Why first come first served with a predicted wait, and not a short fixed queue or
adaptive LIFO: mail clients and their proxies wait seconds for an image, so a queue
that drains within the deadline holds readers who will all still be there to see their
image. Refusing them instead only sends them back sooner (a proxy, or a closed-loop
client, asks again at once), and each refusal is CPU taken from the renders: a short
queue under 128 connections served the default to 99 % of them while drawing a twelfth
of its capacity. A wait predicted from the measured drain rate keeps the queue at what
the deadline allows, so the renders go on at full rate, every admitted open is drawn
in time, and the opens past that are told at once. LIFO would serve the newest first,
but make the oldest wait out their whole deadline before getting the default.

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
# Weight of the newest sample in the running averages of render time and drain interval.
_SMOOTHING = 0.05


class OverloadedError(Exception):
    """No room to render in time; the caller serves the default."""


class Place:
    """A place in the pool's queue, held from admission until the render it was taken for
    ends, or until released unused (the open found its image in a cache)."""

    __slots__ = ("_pool", "held")

    def __init__(self, pool: RenderPool) -> None:
        self._pool = pool
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._pool._leave()


class RenderPool:
    """`threads` renders at once, and at most `max_waiting` more opens holding a place (a
    bound on memory, not on time: time is bounded by each open's deadline)."""

    def __init__(self, *, threads: int, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._threads = threads
        self._max_places = threads + max_waiting
        self._places = 0  # taken: renders to come, waiting for a thread or running
        self._rendering = 0  # of those, the renders waiting for a thread or running
        # The recent CPU time of one render in its thread: the pool's pace when renders
        # get the CPU they need. Not the wall time: when refused opens come straight
        # back (a closed loop, a proxy retrying), answering them takes the CPU and the
        # wall time of renders grows; a wait predicted from that would refuse more,
        # which brings more back, down to a pool that draws a tenth of its capacity.
        self._cpu_s = 0.0
        self._slots: asyncio.Semaphore | None = None

    def admit(self, deadline: float | None = None) -> Place:
        """A place in the queue for a render to come; OverloadedError as `run` would."""
        refusal = self.refusal(deadline)
        if refusal is not None:
            raise OverloadedError(refusal)
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
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        self._rendering += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                result, cpu_s = await loop.run_in_executor(self._executor, _timed, work)
                self._cpu_s += (cpu_s - self._cpu_s) * _SMOOTHING
                return result
        finally:
            self._rendering -= 1
            place.release()

    def refusal(self, deadline: float | None = None) -> str | None:
        """Why a render asked for now would be refused (see `run`); None if it would not."""
        if self._places >= self._max_places:
            return "render queue full"
        if deadline is not None and time.monotonic() + self.predicted_s() > deadline:
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
        return (ahead / self._threads + 1) * self._cpu_s

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    """`work`'s result and the CPU time its thread spent on it."""
    started = time.thread_time()
    result = work()
    return result, time.thread_time() - started
