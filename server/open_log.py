"""The writes an open makes, batched off the response path.

Each open remembers what it showed (for the click) and counts an impression. Writing
them one by one would add a store round trip per open; instead they are queued and
flushed together in one pipeline every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.keys import PREFIX, remembered_key

log = logging.getLogger("atopen.opens")
IMPRESSIONS_TTL_S = 400 * 86_400
MAX_QUEUE = 100_000


def impressions_key(block_id: str, day: str) -> str:
    return f"{PREFIX}impressions:{block_id}:{day}"


@dataclass(frozen=True, slots=True)
class OpenRecord:
    block_id: str
    recipient: str | None
    variant: str
    link: str
    at: float


class OpenLog:
    """Queue of open records, flushed in one pipeline per interval."""

    def __init__(self, redis: Redis, *, click_memory_s: int, interval_s: float = 0.05) -> None:
        self._redis = redis
        self._click_memory_s = click_memory_s
        self._interval_s = interval_s
        self._queue: list[OpenRecord] = []
        self._wake = asyncio.Event()

    def record(self, block_id: str, recipient: str | None, variant: str, link: str) -> None:
        if len(self._queue) >= MAX_QUEUE:
            return  # the store is not keeping up: losing counts beats losing memory
        self._queue.append(OpenRecord(block_id, recipient, variant, link, time.time()))

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for record in batch:
                    day = datetime.fromtimestamp(record.at, UTC).date().isoformat()
                    counter = impressions_key(record.block_id, day)
                    pipe.hincrby(counter, record.variant, 1)
                    pipe.expire(counter, IMPRESSIONS_TTL_S)
                    if record.recipient is not None:
                        key = remembered_key(record.recipient)
                        entry = {"variant": record.variant, "link": record.link, "at": record.at}
                        pipe.hset(key, record.block_id, orjson.dumps(entry))
                        pipe.expire(key, self._click_memory_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not write %d open records: %r", len(batch), exc)
