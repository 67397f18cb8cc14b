"""Stage 1 of an open, admit: its deadline, and its place in the render queue.

An open that will most likely render (a block drawn per recipient) takes its place
before anything else, even before its signature is checked: under overload, the opens
that cannot be drawn in time are told at once, for the cost of a lookup, and the CPU
stays with the renders of the opens that can.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.blocks.snapshot import PreparedBlock
from server.opens.loop_lag import LoopLag
from server.opens.render_pool import Place, RenderPool

# What the open leaves of its deadline for writing the answer, which under three times
# capacity took 15-70 ms (a busy event loop's turns); at most a fifth of a short one.
ANSWER_MARGIN_S = 0.1
# How far past its deadline an open whose turn came in time may finish, as a share of
# the deadline. The turn is given only when the work should end by the deadline; when
# it runs over (a busy event loop, a render slower than the recent ones), giving it up
# would throw away the store read, the rules and the render already spent, and serve
# the reader the default. Mail clients wait seconds longer than the deadline.
FINISH_GRACE_SHARE = 0.5


@dataclass(slots=True)
class Admitted:
    """An open let in: when its work must end (a `time.monotonic()` instant), when it
    must end at the latest once its turn came in time, and its place in the render
    queue if it took one (released when unused)."""

    deadline: float
    finish_by: float
    place: Place | None

    def release(self) -> None:
        if self.place is not None:
            self.place.release()


class Admission:
    def __init__(self, pool: RenderPool, loop_lag: LoopLag, deadline_ms: int) -> None:
        self._pool = pool
        self._loop_lag = loop_lag
        deadline_s = deadline_ms / 1000
        self._work_s = deadline_s - min(ANSWER_MARGIN_S, deadline_s / 5)
        self._grace_s = deadline_s * FINISH_GRACE_SHARE

    def lets_in_placeless(self, prepared: PreparedBlock) -> bool:
        """Whether `admit` would let the open in now without a place in the render queue
        (its block draws nothing per recipient, and the loop is not late past its
        deadline): such an open may be answered at once when its image is in memory."""
        return not prepared.personal_variants and self._loop_lag.seconds < self._work_s

    def admit(self, prepared: PreparedBlock) -> Admitted | None:
        """Let the open in, or None: the default, at once (the open waited out its
        deadline for the event loop, or the renders ahead would not leave it time).

        The time the open already waited for the event loop counts against its
        deadline."""
        now = time.monotonic()
        deadline = now + self._work_s - self._loop_lag.seconds
        if deadline <= now:
            return None
        place = None
        if prepared.personal_variants:
            place = self._pool.place(deadline)
            if place is None:
                return None
        return Admitted(deadline, deadline + self._grace_s, place)
