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
from dataclasses import dataclass
from datetime import UTC, datetime

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


@dataclass(frozen=True, slots=True)
class OpenRecord:
    block_id: str
    recipient: str | None
    variant: str
    link: str
    at: float
    extra: Sequence[RedisCommand] = ()


class OpenLog:
    """Queue of open records, flushed in one pipeline per interval."""

    def __init__(self, redis: Redis, *, click_memory_s: int, interval_s: float = 0.05) -> None:
        self._redis = redis
        self._click_memory_s = click_memory_s
        self._interval_s = interval_s
        self._queue: list[OpenRecord] = []

    def record(
        self,
        block_id: str,
        recipient: str | None,
        variant: str,
        link: str,
        extra: Sequence[RedisCommand] = (),
    ) -> None:
        """Queue an open; `extra` are further writes it makes (the last seen location)."""
        if len(self._queue) >= MAX_QUEUE:
            return  # the store is not keeping up: losing counts beats losing memory
        self._queue.append(OpenRecord(block_id, recipient, variant, link, time.time(), extra))

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        # Counts add up per (block, day, variant); a recipient's memory keeps the last
        # render per block. So a burst of opens costs a few commands, not several each.
        counts: Counter[tuple[str, str, str]] = Counter()
        memories: dict[str, dict[str, bytes]] = defaultdict(dict)
        extras: dict[str | None, Sequence[RedisCommand]] = {}
        for record in batch:
            if record.extra:
                extras[record.recipient] = record.extra  # the newest per recipient
            day = datetime.fromtimestamp(record.at, UTC).date().isoformat()
            counts[(record.block_id, day, record.variant)] += 1
            if record.recipient is not None:
                entry = {"variant": record.variant, "link": record.link, "at": record.at}
                memories[record.recipient][record.block_id] = orjson.dumps(entry)
        commands: list[RedisCommand] = []
        counters = set()
        for (block_id, day, variant), count in counts.items():
            counter = impressions_key(block_id, day)
            commands.append(("HINCRBY", counter, variant, count))
            counters.add(counter)
        commands.extend(("EXPIRE", counter, IMPRESSIONS_TTL_S) for counter in counters)
        recipients = list(memories)
        for start in range(0, len(recipients), MEMORIES_PER_CALL):
            chunk = recipients[start : start + MEMORIES_PER_CALL]
            args: list[str | bytes | int] = [self._click_memory_s]
            for recipient in chunk:
                entries = memories[recipient]
                args.append(len(entries))
                args.extend(part for item in entries.items() for part in item)
            keys = [remembered_key(recipient) for recipient in chunk]
            commands.append(("EVAL", _REMEMBER_SCRIPT, len(keys), *keys, *args))
        commands.extend(c for extra in extras.values() for c in extra)
        try:
            replies = await execute_raw(self._redis, commands)
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not write %d open records: %r", len(batch), exc)
