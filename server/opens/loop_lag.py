"""How far behind the event loop runs: about what a request waited before its handler.

With more opens arriving than the process can serve, requests wait in the event loop
(and the socket) before any handler sees them, and a deadline counted from the
handler's start cannot know. A timer notes how late it fires, every
`INTERVAL_S`; an open takes that lag off its deadline, so that a process which has
fallen behind answers with the default at once (cheap) instead of spending CPU on
renders for readers who have waited their deadline out already, and catches up.
The worst lag of each second is the metric `atopen_event_loop_lag_seconds`: the first
sign of a saturated worker.
"""

from __future__ import annotations

import asyncio

from server.metrics import LOOP_LAG

INTERVAL_S = 0.01
# The metric shows the worst lag of each window this long.
WINDOW_S = 1.0


class LoopLag:
    """The lateness of the last tick of a timer on the running loop, in seconds."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._window_end = 0.0
        self._window_worst = 0.0

    def start(self) -> None:
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.seconds = 0.0

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + INTERVAL_S
        self._timer = loop.call_at(due, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        self.seconds = max(0.0, now - due)
        self._window_worst = max(self._window_worst, self.seconds)
        if now >= self._window_end:
            LOOP_LAG.set(self._window_worst)
            self._window_end = now + WINDOW_S
            self._window_worst = 0.0
        self._schedule(loop)
