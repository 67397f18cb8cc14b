"""`params`: the send-time merge fields of the signed URL (`m.NAME` → `params.NAME`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from content_sources.source import OpenRequest, RedisCommand


class ParamsSource:
    name = "params"

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return dict(request.params)
