"""The store keys of records and reports.

Every key of one block's reports carries the block id as a hash tag (`{block}`), so a
report's `PFCOUNT` over many days' HyperLogLogs runs on one Redis Cluster node. The
record stream is one key (one node); the personal keys (engagement, last click) are in
`content_sources.redis_keys` with the recipient's hash tag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from content_sources.redis_keys import PREFIX

STREAM_KEY = f"{PREFIX}records"
# The id of the newest entry the stream's trimming removed (see writes.APPEND_SCRIPT).
# Its hash tag is the stream's name: on Redis Cluster both are in one slot, as the
# script that writes both needs.
TRIMMED_KEY = f"{{{STREAM_KEY}}}:trimmed"
# How many records the stream's entries hold together (an entry holds a flush's batch).
COUNT_KEY = f"{{{STREAM_KEY}}}:count"
# Report counters are kept as long as the impression counters: 400 days.
STATS_TTL_S = 400 * 86_400

Dimension = Literal["variant", "client", "country"]
DIMENSIONS: tuple[Dimension, ...] = ("variant", "client", "country")


def stats_key(block_id: str, day: str) -> str:
    """A hash of counters: field `stats_field(dimension, value, metric)` -> count."""
    return f"{PREFIX}stats:{{{block_id}}}:{day}"


def readers_key(block_id: str, day: str, name: str) -> str:
    """A HyperLogLog of the recipients who read the block that day (`name`: dimension and
    value, from `stats_field`)."""
    return f"{PREFIX}readers:{{{block_id}}}:{day}:{name}"


def clickers_key(block_id: str, day: str, name: str) -> str:
    return f"{PREFIX}clickers:{{{block_id}}}:{day}:{name}"


def stats_field(dimension: str, value: str, metric: str | None = None) -> str:
    """`variant=hero` or, with a metric, `variant=hero=clicks` (`=` is in no value: see
    `BLOCK_ID_PATTERN` and the variant name rule; a country is two letters)."""
    name = f"{dimension}={value}"
    return name if metric is None else f"{name}={metric}"


@lru_cache(maxsize=64)
def _day_of(epoch_day: int) -> str:
    return datetime.fromtimestamp(epoch_day * 86_400, UTC).date().isoformat()


def utc_day(ts_ms: int) -> str:
    return _day_of(ts_ms // 86_400_000)
