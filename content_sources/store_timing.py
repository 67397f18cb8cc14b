"""The time of each store round trip for opens, handed to whoever measures it.

The sources make the round trips; what becomes of the times (the server's metrics) is
decided above them, by `report_round_trips_to`.
"""

from __future__ import annotations

from collections.abc import Callable

RoundTripObserver = Callable[[float], None]


def _unobserved(_seconds: float) -> None:
    """Until someone listens, the times are dropped."""


_observer: RoundTripObserver = _unobserved


def report_round_trips_to(observer: RoundTripObserver) -> None:
    """From now on every round trip's time, in seconds, goes to `observer`."""
    global _observer
    _observer = observer


def round_trip_took(seconds: float) -> None:
    _observer(seconds)
