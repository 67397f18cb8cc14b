"""`geo`: where the reader is. IP geolocation is not configured in this release, so the
value says so (`source: "none"`) and every location field is missing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from content_sources.base import OpenRequest, RedisCommand


class GeoSource:
    name = "geo"

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return {"source": "none"}
