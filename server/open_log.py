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

log = logging.getLogger("atopen.opens")
IMPRESSIONS_TTL_S = 400 * 86_400
MAX_QUEUE = 100_000
# One command per recipient: set the remembered renders and renew the memory's TTL.
# KEYS: the recipient's memory. ARGV: TTL seconds, then block/entry pairs.
_REMEMBER_SCRIPT = """
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
"""


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
        self._remember = redis.register_script(_REMEMBER_SCRIPT)

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
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                counters = set()
                for (block_id, day, variant), count in counts.items():
                    counter = impressions_key(block_id, day)
                    pipe.hincrby(counter, variant, count)
                    counters.add(counter)
                for counter in counters:
                    pipe.expire(counter, IMPRESSIONS_TTL_S)
                for recipient, entries in memories.items():
                    fields = [part for item in entries.items() for part in item]
                    await self._remember(
                        keys=[remembered_key(recipient)],
                        args=[self._click_memory_s, *fields],
                        client=pipe,
                    )
                for command in (c for commands in extras.values() for c in commands):
                    pipe.execute_command(*command)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not write %d open records: %r", len(batch), exc)
