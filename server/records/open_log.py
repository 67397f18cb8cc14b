"""The writes an open makes, batched off the response path.

Each open remembers what it showed (for the click) and counts an impression, and each
answer to an image request and each click is recorded (server/records). Writing them
one by one would add a store round trip per open; instead they are queued and flushed
together in one pipeline every few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.redis_batch import execute_raw
from content_sources.redis_cluster_pipe import cluster_client, slot_of
from content_sources.redis_keys import PREFIX, remembered_key, remembered_keys
from content_sources.source import RedisCommand
from server.records.writes import PendingOpen, PendingRecords, RecordWriter

log = logging.getLogger("atopen.opens")
IMPRESSIONS_TTL_S = 400 * 86_400
MAX_QUEUE = 100_000
# Recipients' memories are written by one command per flush (per `MEMORIES_PER_CALL`
# recipients): per-recipient commands cost more to encode than the store takes to run.
# Most opens of a flush share their block, variant and link, so each such entry is sent
# once, with the keys that get it. KEYS: the recipients' memories, grouped by entry.
# ARGV: TTL seconds, then per group the block, the entry and how many keys get it: set
# it, and renew the memory's TTL.
_REMEMBER_SCRIPT = """
local first = 1
for g = 2, #ARGV, 3 do
  local last = first + tonumber(ARGV[g + 2]) - 1
  for k = first, last do
    redis.call('HSET', KEYS[k], ARGV[g], ARGV[g + 1])
    redis.call('EXPIRE', KEYS[k], ARGV[1])
  end
  first = last + 1
end
return 0
"""
MEMORIES_PER_CALL = 500
# How often the queued opens are written, unless the log is given its own interval.
FLUSH_INTERVAL_S = 0.05

# What an impression is counted by: an answer's block, variant, and link (None for a
# default served for a fault, which is no impression).
_IMPRESSION = itemgetter(1, 3, 8)


class Answer(Protocol):
    """What an image request was answered (the opens' `ImageAnswer`)."""

    @property
    def variant(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def recipient(self) -> str | None:
        """Whom it was for, when the URL was signed for them."""

    @property
    def country(self) -> str | None:
        """Where the open located the reader, if it did."""

    @property
    def link(self) -> str | None:
        """What a click on it follows; None when it is not remembered for clicks."""


def impressions_key(block_id: str, day: str) -> str:
    return f"{PREFIX}impressions:{block_id}:{day}"


class OpenLog:
    """The opens' writes, queued as they come and flushed in one pipeline per interval.

    An open only appends to the queue; the flush adds them up. Both the day an open is
    counted on and the time its memory records are the flush's (at most one interval
    later than the open)."""

    def __init__(
        self,
        redis: Redis,
        *,
        click_memory_s: int,
        interval_s: float | None = None,
        records: RecordWriter | None = None,
    ) -> None:
        """`records`: how answers and clicks are recorded; None records nothing."""
        self._redis = redis
        self._click_memory_s = click_memory_s
        self._by_slot = cluster_client(redis) is not None
        self._interval_s = FLUSH_INTERVAL_S if interval_s is None else interval_s
        self._seen: dict[str, Sequence[RedisCommand]] = {}
        self._records = records
        self._pending = PendingRecords()

    def answered(self, block_id: str, version: int, answer: Answer, user_agent: str | None) -> None:
        """Note an answer to an image request of a known block: recorded, and when it has
        a link (it showed a variant rather than a default served for a fault), counted as
        an impression and remembered for its recipient's click. One tuple per answer:
        the flush does the rest."""
        answers = self._pending.opens
        if len(answers) < MAX_QUEUE:  # else the store is not keeping up: counts are lost
            answers.append(
                (
                    time.time(),
                    block_id,
                    version,
                    answer.variant,
                    answer.recipient,
                    user_agent,
                    answer.country,
                    answer.outcome,
                    answer.link,
                )
            )

    def clicked(
        self,
        block_id: str,
        version: int,
        recipient: str | None,
        link: str,
        user_agent: str | None,
        head: bool,
    ) -> None:
        """Record a click (`recipient` only if the URL was signed; `head`: a HEAD request)."""
        clicks = self._pending.clicks
        if self._records is not None and len(clicks) < MAX_QUEUE:
            clicks.append((time.time(), block_id, version, recipient, link, user_agent, head))

    def seen(self, recipient: str, commands: Sequence[RedisCommand]) -> None:
        """Further writes an open of `recipient` makes (where the reader was seen): the
        newest per recipient."""
        self._seen[recipient] = commands

    async def run(self) -> None:
        """Flush forever (until cancelled)."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        seen, self._seen = self._seen, {}
        pending, self._pending = self._pending, PendingRecords()
        answers = pending.opens
        commands: list[RedisCommand] = []
        if self._records is not None and (answers or pending.clicks):
            try:
                commands = await self._record_commands(self._records, pending)
            except Exception as exc:  # a record lost is logged; the opens' writes go on
                log.warning(
                    "could not record %d opens and %d clicks: %r",
                    len(answers),
                    len(pending.clicks),
                    exc,
                )
        if not answers and not seen and not commands:
            return
        at = time.time()
        day = _day(int(at // 86_400))
        counters = set()
        # Impressions: the answers that showed a variant (a link to follow), counted in C.
        for (block_id, variant, link), count in Counter(map(_IMPRESSION, answers)).items():
            if link is not None:
                counter = impressions_key(block_id, day)
                commands.append(("HINCRBY", counter, variant, count))
                counters.add(counter)
        commands.extend(("EXPIRE", counter, IMPRESSIONS_TTL_S) for counter in counters)
        commands.extend(self._remember(answers, at))
        commands.extend(c for writes in seen.values() for c in writes)
        try:
            replies = await execute_raw(self._redis, commands)
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not write %d opens: %r", len(answers), exc)

    async def _record_commands(
        self, records: RecordWriter, pending: PendingRecords
    ) -> list[RedisCommand]:
        """The writes that record `pending`; clicks are classified from a read first."""
        replies: list[object] = []
        reads = records.click_reads(pending.clicks)
        if reads:
            replies = await execute_raw(self._redis, reads)
        return records.flush_commands(pending, replies, one_slot=self._by_slot)

    def _remember(self, answers: list[PendingOpen], at: float) -> list[RedisCommand]:
        """The commands that remember each recipient's last variant shown of each block."""
        latest: dict[tuple[str, str], tuple[str, str]] = {}
        for _, block_id, _, variant, recipient, _, _, _, link in answers:
            if link is not None and recipient is not None:
                latest[(recipient, block_id)] = (variant, link)  # the newest wins
        if not self._by_slot:
            return self._remember_calls(latest, at)
        # On a Redis Cluster a script's keys must share a slot: one call per slot.
        by_slot: dict[int, dict[tuple[str, str], tuple[str, str]]] = defaultdict(dict)
        for (recipient, block_id), entry in latest.items():
            by_slot[slot_of(remembered_key(recipient))][(recipient, block_id)] = entry
        return [c for part in by_slot.values() for c in self._remember_calls(part, at)]

    def _remember_calls(
        self, latest: dict[tuple[str, str], tuple[str, str]], at: float
    ) -> list[RedisCommand]:
        """The script calls that write `latest` (recipient, block -> variant, link)."""
        groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for (recipient, block_id), (variant, link) in latest.items():
            groups[(block_id, variant, link)].append(recipient)
        commands: list[RedisCommand] = []
        keys: list[str] = []
        args: list[str | bytes | int] = [self._click_memory_s]
        for (block_id, variant, link), recipients in groups.items():
            group_keys = remembered_keys(recipients)
            entry = orjson.dumps({"variant": variant, "link": link, "at": at})
            start = 0
            while start < len(group_keys):
                if len(keys) == MEMORIES_PER_CALL:
                    commands.append(("EVAL", _REMEMBER_SCRIPT, len(keys), *keys, *args))
                    keys, args = [], [self._click_memory_s]
                part = group_keys[start : start + MEMORIES_PER_CALL - len(keys)]
                keys.extend(part)
                args.extend((block_id, entry, len(part)))
                start += len(part)
        if keys:
            commands.append(("EVAL", _REMEMBER_SCRIPT, len(keys), *keys, *args))
        return commands


@lru_cache(maxsize=8)
def _day(epoch_day: int) -> str:
    """The UTC date of a day counted from 1970-01-01, as the impression counters name it."""
    return (date(1970, 1, 1) + timedelta(days=epoch_day)).isoformat()
