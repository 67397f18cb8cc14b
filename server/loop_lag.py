"""How far behind the event loop runs: about what a request waited before its handler.

With more opens arriving than the process can serve, requests wait in the event loop
(and the socket) before any handler sees them, and a deadline counted from the
handler's start cannot know. A timer notes how late it fires, every
`INTERVAL_S`; an open takes that lag off its deadline, so that a process which has
fallen behind answers with the default at once (cheap) instead of spending CPU on
renders for readers who have waited their deadline out already, and catches up.
"""

from __future__ import annotations

import asyncio

INTERVAL_S = 0.01


class LoopLag:
    """The lateness of the last tick of a timer on the running loop, in seconds."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._timer: asyncio.TimerHandle | None = None

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
        self.seconds = max(0.0, loop.time() - due)
        self._schedule(loop)
