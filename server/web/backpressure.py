"""Backpressure on a connection whose open was refused: its next request waits unread.

A client that asks again as soon as it is answered (a mail provider's proxy fetching the
next image on the same connection, a closed-loop load generator) turns each refusal into
another open to refuse at once. A refusal is cheap, but not free, and the opens it
brings back are not spread out: measured with the load generator on a CPU of its own,
1,024 such connections made a worker refuse about 10,000 opens a second, its event loop
turned over so slowly that the opens it had admitted waited for it between their steps,
and it drew 5 to 30 % of its capacity (docs/performance.md).

So after a refusal the connection is not read for a moment (`ATOPEN_REFUSAL_PAUSE_MS`):
the refused reader has the default at once, and the connection's next open waits in the
socket, at most that long, before it is read and its own deadline starts. That bounds
the refusals to one per connection per pause, whatever the clients do. Other
connections are read as before. A connection that aiohttp is holding unread itself (its
requests queued faster than they are answered) is left to aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque


class RefusalPause:
    """Pauses reading a connection for `seconds` after a refusal (0: never).

    The pause is the same for every connection, so they end in the order they began: one
    timer, set for the oldest, resumes every connection whose pause is over when it
    fires. A timer per refusal cost about 6,000 instructions more a refusal (of 240,000)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._paused: deque[tuple[float, asyncio.Transport]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def after_refusal(self, transport: asyncio.Transport | None) -> None:
        if not self._seconds or transport is None:
            return  # off, or the connection is gone
        if not transport.is_reading():
            return  # aiohttp holds it unread: its own flow control decides when to read
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        self._paused.append((loop.time() + self._seconds, transport))
        if self._timer is None:
            self._timer = loop.call_at(self._paused[0][0], self._resume_due, loop)

    def _resume_due(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        paused = self._paused
        while paused and paused[0][0] <= now:
            _, transport = paused.popleft()
            if not transport.is_closing():
                transport.resume_reading()
        self._timer = loop.call_at(paused[0][0], self._resume_due, loop) if paused else None
