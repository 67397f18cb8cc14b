"""Rendering off the event loop, in a bounded pool that sheds load instead of queueing.

Image work is CPU-bound: run on the loop, one render would stall every other open. The
pool runs a fixed number of renders at once and lets a bounded number wait; past that,
or when too little of the open's deadline is left to render, it refuses at once and the
open is answered with the pre-rendered default (counted), never a timeout or an error.

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
# Weight of the newest render in the running average of render times.
_SMOOTHING = 0.1


class OverloadedError(Exception):
    """No room to render now; the caller serves the default."""


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
    def __init__(self, *, threads: int, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._threads = threads
        self._max_waiting = max_waiting
        self._places = 0  # taken: renders to come, waiting for a thread or running
        self._rendering = 0  # of those, the renders waiting for a thread or running
        self._average_s = 0.0
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
        """Run `work` in the pool, in `place` if one was taken for it.

        OverloadedError when the queue is full, or when it would have to wait and the
        renders ahead of it (at the recent average time each) would not leave it time to
        finish by `deadline` (a `time.monotonic()` value): better the default now than a
        timeout. With a place, only the renders already waiting for a thread count.
        """
        if place is None or not place.held:
            place = self.admit(deadline)
        elif (refusal := self._no_time(self._rendering, deadline)) is not None:
            place.release()
            raise OverloadedError(refusal)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        self._rendering += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                started = time.monotonic()
                result = await loop.run_in_executor(self._executor, work)
                elapsed = time.monotonic() - started
                self._average_s += (elapsed - self._average_s) * _SMOOTHING
                return result
        finally:
            self._rendering -= 1
            place.release()

    def refusal(self, deadline: float | None = None) -> str | None:
        """Why a render asked for now would be refused (see `run`); None if it would not."""
        if self._places >= self._threads + self._max_waiting:
            return "render queue full"
        return self._no_time(self._places, deadline)

    def _no_time(self, ahead: int, deadline: float | None) -> str | None:
        """Whether `ahead` renders, at the recent average time each, leave no time to
        finish one more by `deadline`.

        A free thread starts it at once, whatever the average says: the render checks
        its deadline itself, and only renders that run can bring down an average that
        one slow render (fonts loaded on first use) pushed past every deadline."""
        if deadline is not None and ahead >= self._threads:
            rounds = ahead // self._threads + 1
            if time.monotonic() + rounds * self._average_s > deadline:
                return "no time left to render"
        return None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
