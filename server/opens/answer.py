"""Stage 5 of an open, answer: what is remembered of it, and the default when it fails.

Nothing here waits: the open log takes the answer as a tuple and writes it with the
others of the next 50 ms (the record, the impression, what the click will follow, where
the reader was seen).
"""

from __future__ import annotations

from content_sources.geo import remember_commands
from content_sources.rule_context import RuleContext
from renderers.plan import ImageFormat
from server import metrics
from server.blocks.selection import Choice, safe_link
from server.blocks.snapshot import PreparedBlock
from server.opens.query import ImageAnswer
from server.outcomes import FallbackReason, Outcome
from server.records.open_log import OpenLog


class Recorder:
    def __init__(self, open_log: OpenLog, last_seen_s: int) -> None:
        self._open_log = open_log
        self._last_seen_s = last_seen_s

    def seen(self, recipient: str | None, context: RuleContext) -> None:
        """Remember where the open placed the reader (from `context`, when one was built).
        The rest of what an open leaves (its record, impression and the link its click
        follows) goes with its answer (`OpenLog.answered`)."""
        if recipient is not None and context:
            seen = remember_commands(recipient, context, self._last_seen_s)
            if seen:
                self._open_log.seen(recipient, seen)


def link_of(prepared: PreparedBlock, choice: Choice) -> str:
    """Where a click on the chosen variant goes: its link if allowed, else the default's."""
    return safe_link(prepared.block, choice.link) or prepared.default_link


def fallback(
    prepared: PreparedBlock,
    fmt: ImageFormat,
    dpr: int,
    reason: FallbackReason,
    recipient: str | None = None,
) -> ImageAnswer:
    """The block's pre-rendered default: no store, no CPU (counted by `reason`).
    `recipient`: whom it is for, when the signature was checked already."""
    metrics.FALLBACKS[reason].inc()
    return ImageAnswer(prepared.fallback(fmt, dpr), "default", Outcome.fallback(reason), recipient)


def country_of(context: RuleContext) -> str | None:
    """The reader's country as the open located them (an ISO 3166 code), if it did."""
    geo = context.geo
    country = geo.get("country") if geo is not None else None
    if isinstance(country, str) and len(country) == 2 and country.isalpha():
        return country.upper()
    return None
