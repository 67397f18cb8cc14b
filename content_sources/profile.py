"""`profile`: the recipient's current profile fields, read at open time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from content_sources.documents import decode_object
from content_sources.redis_keys import profile_key
from content_sources.source import OpenRequest, Reach, RedisCommand


class ProfileSource:
    name = "profile"
    depends_on = frozenset[str]()
    reach = Reach.PERSONAL
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None:
            return ()
        return (("GET", profile_key(request.recipient)),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        return (decode_object(replies[0]) if replies else None) or {}
