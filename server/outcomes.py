"""What became of one image open, as logs, metrics, records and `/metrics` name it."""

from __future__ import annotations

from enum import StrEnum


class FallbackReason(StrEnum):
    """Why an open was answered with the block's pre-rendered default. A `str`, as
    `Outcome` is: every refused open looks it up twice (its metric, its outcome), and a
    plain `Enum` hashes in Python."""

    DEADLINE = "deadline"  # the open's deadline passed before its image was ready
    OVERLOADED = "overloaded"  # the render queue was full
    ERROR = "error"  # anything else went wrong


class Outcome(StrEnum):
    """How an open's image was made. Each member is the very word every log line, record
    and `/metrics` label carries (a `str`: answering an open compares, hashes and passes
    it on at the cost of a string's)."""

    RENDERED = "rendered"
    CACHED = "cached"
    STATIC = "static"  # the block's pre-render, shown on purpose: it looks the same for all
    FALLBACK_DEADLINE = "fallback:deadline"
    FALLBACK_OVERLOADED = "fallback:overloaded"
    FALLBACK_ERROR = "fallback:error"

    @classmethod
    def fallback(cls, reason: FallbackReason) -> Outcome:
        return _FALLBACKS[reason]

    @property
    def kind(self) -> str:
        """What `/metrics` counts it as: every fallback as one `fallback`."""
        return "fallback" if self.startswith("fallback:") else str(self)


_FALLBACKS = {
    FallbackReason.DEADLINE: Outcome.FALLBACK_DEADLINE,
    FallbackReason.OVERLOADED: Outcome.FALLBACK_OVERLOADED,
    FallbackReason.ERROR: Outcome.FALLBACK_ERROR,
}
