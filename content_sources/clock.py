"""`now`: the open's time, aware, in the recipient's time zone.

The zone is the first valid one of: the URL's `tz`, the profile's `tz`, the block's
`tz`, then UTC. An unknown zone name is skipped, never an error.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from content_sources.source import OpenRequest, Reach, RedisCommand


@lru_cache(maxsize=1024)
def zone(name: str) -> tzinfo | None:
    """The IANA zone of that name, or None (cached: zone lookups read files)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def recipient_zone(request: OpenRequest, profile: object) -> tzinfo:
    profile_tz = profile.get("tz") if isinstance(profile, Mapping) else None
    for candidate in (request.tz, profile_tz, request.block_tz):
        if isinstance(candidate, str) and candidate and (found := zone(candidate)) is not None:
            return found
    return UTC


def _second(now: object) -> Hashable:
    """Choices made from the clock alone are equal within one second."""
    return now.isoformat(timespec="seconds") if isinstance(now, datetime) else None


class ClockSource:
    name = "now"
    depends_on = frozenset({"profile"})  # the profile's time zone
    reach = Reach.SHARED
    always_build = False
    shared_reads = False
    reads_address = False
    after_round_trip = None
    memo_part = staticmethod(_second)

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return request.at.astimezone(recipient_zone(request, context.get("profile")))
