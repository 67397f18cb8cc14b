"""`params`: the send-time merge fields of the signed URL (`m.NAME` → `params.NAME`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from content_sources.source import OpenRequest, Reach, RedisCommand


class ParamsSource:
    name = "params"
    depends_on = frozenset[str]()
    reach = Reach.PERSONAL
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return ()

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return dict(request.params)
