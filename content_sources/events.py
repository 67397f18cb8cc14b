"""`events`: the recipient's recent actions, and how they are stored.

Events live in one sorted set per recipient, scored by time, capped to the newest
`max_per_recipient` and to a retention window. An event's optional `id` is an
idempotency key: the same id twice stores once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson
from redis.asyncio import Redis

from content_sources.expressions import Missing
from content_sources.redis_cluster_pipe import cluster_client
from content_sources.redis_keys import event_ids_key, events_key
from content_sources.source import OpenRequest, Reach, RedisCommand


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    ts: datetime
    props: Mapping[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(
            {"id": self.id, "type": self.type, "ts": self.ts.isoformat(), "props": self.props}
        )

    @staticmethod
    def decode(raw: object) -> Event | None:
        """A stored event, or None when the member is not one we wrote (never raises)."""
        try:
            data = orjson.loads(raw)  # type: ignore[arg-type]
            return Event(
                id=str(data["id"]),
                type=str(data["type"]),
                ts=datetime.fromisoformat(data["ts"]).astimezone(UTC),
                props=data.get("props") or {},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class Events:
    """What `events` is in a rule: `last`, `within`, `count` over the recent events."""

    __slots__ = ("_events", "_now", "_zone")

    def __init__(self, events: Sequence[Event], now: datetime) -> None:
        self._events = sorted(events, key=lambda e: e.ts, reverse=True)
        self._now = now
        self._zone: tzinfo | None = now.tzinfo

    def last(self, type: str) -> object:
        """The newest event of that type as `{type, ts, props}`, or a missing value."""
        for event in self._events:
            if event.type == type:
                return {
                    "type": event.type,
                    "ts": event.ts.astimezone(self._zone),
                    "props": event.props,
                }
        return Missing(hint=f"no {type!r} event")

    def within(
        self,
        type: str,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> bool:
        """Whether an event of that type happened in the window (any retained one if none given)."""
        window = timedelta(minutes=minutes, hours=hours, days=days)
        since = self._now - window if window else None
        return any(e.type == type and (since is None or e.ts >= since) for e in self._events)

    def count(self, type: str, days: float = 30) -> int:
        since = self._now - timedelta(days=days)
        return sum(1 for e in self._events if e.type == type and e.ts >= since)


class EventsSource:
    name = "events"
    depends_on = frozenset({"now"})
    reach = Reach.PERSONAL
    always_build = False
    shared_reads = False
    reads_address = False
    memo_part = None
    after_round_trip = None

    def __init__(self, max_per_recipient: int) -> None:
        self._max = max_per_recipient

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if request.recipient is None:
            return ()
        return (("ZREVRANGE", events_key(request.recipient), 0, self._max - 1),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        members = replies[0] if replies and isinstance(replies[0], list) else []
        decoded = (Event.decode(m) for m in members)
        now = context.get("now")
        return Events(
            [e for e in decoded if e is not None],
            now if isinstance(now, datetime) else request.at,
        )


# Adds one recipient's events atomically: idempotency check, insert, trim by age and count.
# KEYS: events, event ids. ARGV: max count, retention ms, oldest score kept, then
# (id, score, member) triples. Returns one code per triple, in order: 1 kept, 0 its id
# was already stored, -1 added but trimmed at once (older than the retention window, or
# beyond the cap).
_STORE_SCRIPT = """
local codes = {}
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i + 2])
    codes[#codes + 1] = -1
  else
    codes[#codes + 1] = 0
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
for n = 1, #codes do
  if codes[n] == -1 and redis.call('ZSCORE', KEYS[1], ARGV[n * 3 + 3]) then codes[n] = 1 end
end
return codes
"""


class EventLog:
    """Writes events: all recipients of one batch in one transaction, all or nothing; on
    a Redis Cluster (where recipients live in different slots) each recipient's events
    are written all or nothing."""

    def __init__(self, redis: Redis, *, max_per_recipient: int, retention: timedelta) -> None:
        self._redis = redis
        self._max = max_per_recipient
        self._retention = retention
        self._atomic = cluster_client(redis) is None

    async def store(self, events: Sequence[tuple[str, Event]], now: datetime) -> list[str | None]:
        """Store (recipient, event) pairs; returns, for each in order, None if it was newly
        stored, else why not (a sentence for the API's answer)."""
        by_recipient: dict[str, list[int]] = {}
        for index, (recipient, _) in enumerate(events):
            by_recipient.setdefault(recipient, []).append(index)
        retention_ms = int(self._retention.total_seconds() * 1000)
        oldest_kept = int(now.timestamp() * 1000) - retention_ms
        async with self._redis.pipeline(transaction=self._atomic) as pipe:
            for recipient, indexes in by_recipient.items():
                argv: list[str | int | bytes] = [self._max, retention_ms, oldest_kept]
                for index in indexes:
                    event = events[index][1]
                    argv += [event.id, int(event.ts.timestamp() * 1000), event.encode()]
                # The script itself, not its digest: a cluster node may not have it cached.
                pipe.eval(_STORE_SCRIPT, 2, events_key(recipient), event_ids_key(recipient), *argv)
            replies = await pipe.execute()
        outcomes: list[str | None] = [None] * len(events)
        for indexes, codes in zip(by_recipient.values(), replies, strict=True):
            for index, code in zip(indexes, codes, strict=True):
                outcomes[index] = self._reason(int(code), events[index][1], oldest_kept)
        return outcomes

    def _reason(self, code: int, event: Event, oldest_kept_ms: int) -> str | None:
        if code == 1:
            return None
        if code == 0:
            return "an event with this id is already stored"
        if int(event.ts.timestamp() * 1000) < oldest_kept_ms:
            return f"older than retention ({self._retention.days} days)"
        return f"older than the newest {self._max} events kept for this recipient"
