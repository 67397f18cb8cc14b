"""`last_shown`: what this block last showed this recipient (`{variant, link, at}`).

The memory the click endpoint follows; a sticky block reads it to serve its first
variant again. Missing when this recipient has not seen the block (within the
click memory) or the open is not signed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import orjson

from content_sources.expressions import Missing
from content_sources.redis_keys import remembered_key
from content_sources.source import OpenRequest, Reach, RedisCommand


class LastShownSource:
    name = "last_shown"
    depends_on = frozenset[str]()
    reach = Reach.GROUPED
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def __init__(self, memory_s: int) -> None:
        self._memory_s = memory_s

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None or request.block_id is None:
            return ()
        return (("HGET", remembered_key(request.recipient), request.block_id),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        entry = decode_memory(replies[0] if replies else None, request.at, self._memory_s)
        return entry if entry is not None else Missing(hint="not shown to this recipient yet")


def decode_memory(raw: object, now: datetime, memory_s: int) -> dict[str, object] | None:
    """A remembered render, or None when absent, expired or unreadable (never raises)."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        entry = orjson.loads(raw)
        at = float(entry["at"])
        if now.timestamp() - at > memory_s:
            return None
        return {
            "variant": str(entry["variant"]),
            "link": str(entry["link"]),
            "at": datetime.fromtimestamp(at, UTC),
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
