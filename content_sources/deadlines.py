"""Deadlines as `time.monotonic()` instants, which cross threads and the store client alike."""

from __future__ import annotations

import time


def seconds_left(deadline: float | None) -> float | None:
    """What remains of `deadline` (never below zero); None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
