"""`engagement`: how often this recipient opened and clicked atopen content, as people.

Counted from the records' human opens and clicks (server/records/classify.py): Apple's
prefetches and security scanners never count, so a frequency cap holds for readers and
not for machines. The open log adds them to one sorted set per recipient, scored by
time, keeping the newest 1,000 (a few more between trims) in a set that lasts at least
400 days after the last:

    engagement.opens(days=30, block=None)    human opens in the last `days` days, of
                                             every block or of the one named
    engagement.clicks(days=30, block=None)   human clicks, the same way
    engagement.last_open                     when the last human open was (missing when
                                             there was none)

An open is counted once its write reaches the store, within a flush interval (50 ms):
the open that is being answered is not among its own opens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from content_sources.expressions import Missing
from content_sources.redis_keys import engagement_key
from content_sources.source import OpenRequest, Reach, RedisCommand


class _Action(NamedTuple):
    type: str  # "o" (open) or "c" (click)
    block: str
    at: datetime


class Engagement:
    """What `engagement` is in a rule."""

    __slots__ = ("_actions", "_now")

    def __init__(self, actions: Sequence[_Action], now: datetime) -> None:
        self._actions = sorted(actions, key=lambda a: a.at, reverse=True)
        self._now = now

    def opens(self, days: float = 30, block: str | None = None) -> int:
        return self._count("o", days, block)

    def clicks(self, days: float = 30, block: str | None = None) -> int:
        return self._count("c", days, block)

    @property
    def last_open(self) -> object:
        for action in self._actions:
            if action.type == "o":
                return action.at.astimezone(self._now.tzinfo)
        return Missing(hint="no human open")

    def _count(self, type_: str, days: float, block: str | None) -> int:
        since = self._now - timedelta(days=days)
        return sum(
            1
            for a in self._actions
            if a.type == type_ and a.at >= since and (block is None or a.block == block)
        )


class EngagementSource:
    name = "engagement"
    depends_on = frozenset({"now"})
    reach = Reach.PERSONAL
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None:
            return ()
        return (("ZRANGE", engagement_key(request.recipient), 0, -1, "WITHSCORES"),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        reply = replies[0] if replies and isinstance(replies[0], list) else []
        now = context.get("now")
        return Engagement(_decode(reply), now if isinstance(now, datetime) else request.at)


def _decode(reply: Sequence[object]) -> list[_Action]:
    """Members `TYPE<tab>BLOCK<tab>UNIQUE` with their scores (ms), as ZRANGE WITHSCORES
    gives them (flat, or as redis-py's pairs); what is not one (never raised on) is left
    out."""
    if reply and isinstance(reply[0], list | tuple):  # redis-py's pairs, not the raw reply
        reply = [x for pair in reply for x in pair]  # type: ignore[attr-defined]
    actions = []
    for member, score in zip(reply[::2], reply[1::2], strict=False):
        try:
            text = member.decode() if isinstance(member, bytes) else str(member)
            type_, block, _ = text.split("\t", 2)
            at = datetime.fromtimestamp(float(score) / 1000, UTC)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue
        actions.append(_Action(type_, block, at))
    return actions


class Activity(NamedTuple):
    """A recipient's human opens and clicks over the windows segments look at."""

    opens_30: int  # human opens in the last 30 days
    clicks_30: int
    last_90: int  # human opens and clicks in the last 90 days
    previous_90: int  # in the 90 days before those
    total: int  # every one kept
    days_since_last: int | None  # whole days since the last one; None without any


NO_ACTIVITY = Activity(0, 0, 0, 0, 0, None)


def activity_of(reply: Sequence[object], now: datetime) -> Activity:
    """`Activity` from a `ZRANGE ... WITHSCORES` reply of an engagement set."""
    actions = _decode(reply)
    if not actions:
        return NO_ACTIVITY
    ages = [(a.type, (now - a.at).total_seconds() / 86_400) for a in actions]
    return Activity(
        opens_30=sum(1 for t, age in ages if t == "o" and age <= 30),
        clicks_30=sum(1 for t, age in ages if t == "c" and age <= 30),
        last_90=sum(1 for _, age in ages if age <= 90),
        previous_90=sum(1 for _, age in ages if 90 < age <= 180),
        total=len(actions),
        days_since_last=int(min(age for _, age in ages)),
    )
