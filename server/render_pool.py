"""Rendering off the event loop, in a bounded pool that sheds load instead of queueing.

Image work is CPU-bound: run on the loop, one render would stall every other open. The
pool runs a fixed number of renders at once and lets a bounded number wait; past that,
or when too little of the open's deadline is left to render, it refuses at once and the
open is answered with the pre-rendered default (counted), never a timeout or an error.
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


class RenderPool:
    def __init__(self, *, threads: int, max_waiting: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._threads = threads
        self._max_waiting = max_waiting
        self._running_or_waiting = 0
        self._average_s = 0.0
        self._slots: asyncio.Semaphore | None = None

    async def run(self, work: Callable[[], T], *, deadline: float | None = None) -> T:
        """Run `work` in the pool.

        OverloadedError when the queue is full, or when it would have to wait and the
        renders ahead of it (at the recent average time each) would not leave it time to
        finish by `deadline` (a `time.monotonic()` value): better the default now than a
        timeout.
        """
        refusal = self.refusal(deadline)
        if refusal is not None:
            raise OverloadedError(refusal)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        self._running_or_waiting += 1
        metrics.QUEUE_DEPTH.inc()
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                started = time.monotonic()
                result = await loop.run_in_executor(self._executor, work)
                elapsed = time.monotonic() - started
                self._average_s += (elapsed - self._average_s) * _SMOOTHING
                return result
        finally:
            self._running_or_waiting -= 1
            metrics.QUEUE_DEPTH.dec()

    def refusal(self, deadline: float | None = None) -> str | None:
        """Why a render asked for now would be refused (see `run`); None if it would not."""
        if self._running_or_waiting >= self._threads + self._max_waiting:
            return "render queue full"
        # A free thread starts it at once, whatever the average says: the render checks
        # its deadline itself, and only renders that run can bring down an average that
        # one slow render (fonts loaded on first use) pushed past every deadline.
        if deadline is not None and self._running_or_waiting >= self._threads:
            rounds = self._running_or_waiting // self._threads + 1
            if time.monotonic() + rounds * self._average_s > deadline:
                return "no time left to render"
        return None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
