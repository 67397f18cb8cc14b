"""The writes an open makes, batched off the response path.

Each open remembers what it showed (for the click) and counts an impression. Writing
them one by one would add a store round trip per open; instead they are queued and
flushed together in one pipeline every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.base import RedisCommand
from content_sources.keys import PREFIX, remembered_key
from content_sources.store_batch import execute_raw

log = logging.getLogger("atopen.opens")
IMPRESSIONS_TTL_S = 400 * 86_400
MAX_QUEUE = 100_000
# Recipients' memories are written by one command per flush (per `MEMORIES_PER_CALL`
# recipients): per-recipient commands cost more to encode than the store takes to run.
# KEYS: the recipients' memories. ARGV: TTL seconds, then for each key the number of
# block/entry pairs followed by the pairs: set them, and renew the memory's TTL.
_REMEMBER_SCRIPT = """
local at = 2
for k = 1, #KEYS do
  local count = tonumber(ARGV[at])
  redis.call('HSET', KEYS[k], unpack(ARGV, at + 1, at + 2 * count))
  redis.call('EXPIRE', KEYS[k], ARGV[1])
  at = at + 1 + 2 * count
end
return 0
"""
MEMORIES_PER_CALL = 500


def impressions_key(block_id: str, day: str) -> str:
    return f"{PREFIX}impressions:{block_id}:{day}"


class _Pending:
    """The writes of the opens since the last flush, already added up: counts per
    (block, day, variant), and each recipient's last render per block."""

    __slots__ = ("counts", "extras", "memories", "opens")

    def __init__(self) -> None:
        self.opens = 0
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.memories: dict[str, dict[str, tuple[str, str, float]]] = defaultdict(dict)
        self.extras: dict[str, Sequence[RedisCommand]] = {}


class OpenLog:
    """The opens' writes, added up as they come and flushed in one pipeline per interval."""

    def __init__(self, redis: Redis, *, click_memory_s: int, interval_s: float = 0.05) -> None:
        self._redis = redis
        self._click_memory_s = click_memory_s
        self._interval_s = interval_s
        self._pending = _Pending()

    def record(
        self,
        block_id: str,
        recipient: str | None,
        variant: str,
        link: str,
        extra: Sequence[RedisCommand] = (),
    ) -> None:
        """Note an open; `extra` are further writes it makes (the last seen location)."""
        pending = self._pending
        if pending.opens >= MAX_QUEUE:
            return  # the store is not keeping up: losing counts beats losing memory
        pending.opens += 1
        at = time.time()
        pending.counts[(block_id, _day(int(at // 86_400)), variant)] += 1
        if recipient is not None:
            pending.memories[recipient][block_id] = (variant, link, at)
            if extra:
                pending.extras[recipient] = extra  # the newest per recipient

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if not pending.opens:
            return
        commands: list[RedisCommand] = []
        counters = set()
        for (block_id, day, variant), count in pending.counts.items():
            counter = impressions_key(block_id, day)
            commands.append(("HINCRBY", counter, variant, count))
            counters.add(counter)
        commands.extend(("EXPIRE", counter, IMPRESSIONS_TTL_S) for counter in counters)
        recipients = list(pending.memories)
        for start in range(0, len(recipients), MEMORIES_PER_CALL):
            chunk = recipients[start : start + MEMORIES_PER_CALL]
            args: list[str | bytes | int] = [self._click_memory_s]
            for recipient in chunk:
                entries = pending.memories[recipient]
                args.append(len(entries))
                for block_id, (variant, link, at) in entries.items():
                    args.append(block_id)
                    args.append(orjson.dumps({"variant": variant, "link": link, "at": at}))
            keys = [remembered_key(recipient) for recipient in chunk]
            commands.append(("EVAL", _REMEMBER_SCRIPT, len(keys), *keys, *args))
        commands.extend(c for extra in pending.extras.values() for c in extra)
        try:
            replies = await execute_raw(self._redis, commands)
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not write %d opens: %r", pending.opens, exc)


@lru_cache(maxsize=8)
def _day(epoch_day: int) -> str:
    """The UTC date of a day counted from 1970-01-01, as the impression counters name it."""
    return (date(1970, 1, 1) + timedelta(days=epoch_day)).isoformat()
