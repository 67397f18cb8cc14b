"""`now`: the open's time, aware, in the recipient's time zone.

The zone is the first valid one of: the URL's `tz`, the profile's `tz`, the block's
`tz`, then UTC. An unknown zone name is skipped, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from content_sources.source import OpenRequest, RedisCommand


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


class ClockSource:
    name = "now"

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return request.at.astimezone(recipient_zone(request, context.get("profile")))
