"""The scheduled RFM recompute: quintiles need the whole recipient base at once.

Every process runs `run_segments_job`; a Redis lock taken with `SET NX EX` for the
interval decides which one computes, and also spaces the runs: the lock is not released
after a run, so nobody computes again until it expires. Processes try the lock every
minute (or every interval, if shorter), so a run starts within a minute of being due
even when the process that ran last has gone. A run that fails releases the lock, so
another try comes within that minute. The interval must be longer than a run; each run
logs its duration.

A run (`recompute_segments`):
1. folds the `purchase` events of every recipient's events set into their purchase
   ledger (catches purchases that did not come through `record_purchases`, e.g. stored
   before segments existed), server-side, one script per recipient;
2. reads every ledger and the buyer's human opens and clicks (`engagement`), drops
   purchases older than the history, computes each recipient's raw values and the
   base's quintile cut points (of purchases only: opens and clicks decide segments by
   the fixed windows `content_sources.segments` documents);
3. writes the cut points and every recipient's record (see `content_sources.segments`).

Quintiles need every value at once, so a run holds each buyer's raw values in memory:
a few hundred bytes each, some 300 MB for a million buyers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from content_sources.engagement import activity_of
from content_sources.redis_keys import PREFIX, engagement_key, events_key, purchases_key
from content_sources.segments import (
    CUTS_KEY,
    DAY_MS,
    DEFAULT_POLICY,
    PURCHASE,
    Cuts,
    Metrics,
    RfmPolicy,
    decode_ledger,
    metrics_of,
    record_of,
    write_records,
)

log = logging.getLogger("atopen.segments")

LOCK_KEY = f"{PREFIX}rfm-lock"
POLL_S = 60.0
_BATCH = 500
_EVENTS_PREFIX = events_key("")[:-1]  # "atopen:events:{"
_LEDGER_PREFIX = purchases_key("")[:-1]

# Copies one recipient's purchase events into their ledger (field: event id), skipping
# those older than the history. The amount rule is `segments.amount_of`'s.
# KEYS: events, ledger. ARGV: ledger ttl seconds, oldest ts kept (ms), purchase type.
_FOLD = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local added = 0
for i = 1, #members, 2 do
  local ts = tonumber(members[i + 1])
  local ok, event = pcall(cjson.decode, members[i])
  if ok and type(event) == 'table' and event.type == ARGV[3] and ts > tonumber(ARGV[2]) then
    local amount = 0
    if type(event.props) == 'table' and type(event.props.amount) == 'number'
        and event.props.amount >= 0 and event.props.amount < math.huge then
      amount = event.props.amount
    end
    redis.call('HSET', KEYS[2], tostring(event.id), cjson.encode({ts, amount}))
    added = added + 1
  end
end
if added > 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return added
"""

# Deletes the lock only if this process still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class SegmentsReport:
    folded: int  # purchase events copied from the events store (already known ones count)
    base: int  # recipients scored
    written: int  # records written
    cuts: Cuts


async def recompute_segments(
    redis: Redis, now: datetime, policy: RfmPolicy = DEFAULT_POLICY
) -> SegmentsReport:
    """Recompute every recipient's scores and segments (no lock: see `recompute_if_due`)."""
    folded = await _fold_events(redis, now, policy)
    base = await _read_ledgers(redis, now, policy)
    cuts = Cuts.over(base.values())
    await redis.set(CUTS_KEY, cuts.encode(now, len(base)))
    written = 0
    recipients = list(base)
    for i in range(0, len(recipients), _BATCH):
        batch = recipients[i : i + _BATCH]
        written += await write_records(redis, {r: record_of(base[r], cuts, now) for r in batch})
    return SegmentsReport(folded, len(base), written, cuts)


async def recompute_if_due(
    redis: Redis, now: datetime, *, interval_s: int, policy: RfmPolicy = DEFAULT_POLICY
) -> SegmentsReport | None:
    """Recompute if no process has in the last `interval_s`; None when it was not due."""
    token = secrets.token_hex(16)
    if not await redis.set(LOCK_KEY, token, nx=True, ex=interval_s):
        return None
    try:
        return await recompute_segments(redis, now, policy)
    except Exception:
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            await redis.register_script(_RELEASE)(keys=[LOCK_KEY], args=[token])
        raise


async def run_segments_job(
    redis: Redis,
    interval_s: int,
    *,
    policy: RfmPolicy = DEFAULT_POLICY,
    poll_s: float = POLL_S,
) -> None:
    """Recompute every `interval_s` seconds across all processes, until cancelled."""
    while True:
        started = time.monotonic()
        try:
            report = await recompute_if_due(
                redis, datetime.now(UTC), interval_s=interval_s, policy=policy
            )
        except Exception as exc:  # the store may be down: try again at the next poll
            log.warning("segments recompute failed: %r", exc)
        else:
            if report is not None:
                log.info(
                    "segments recomputed: %d recipients, %d purchases folded, in %.1f s",
                    report.base,
                    report.folded,
                    time.monotonic() - started,
                )
        await asyncio.sleep(min(poll_s, interval_s))


async def _fold_events(redis: Redis, now: datetime, policy: RfmPolicy) -> int:
    oldest_ms = int(now.timestamp() * 1000) - policy.history_days * DAY_MS
    args: list[int | str] = [policy.history_days * 86_400, oldest_ms, PURCHASE]
    folded = 0
    async for batch in _recipients(redis, _EVENTS_PREFIX):
        async with redis.pipeline(transaction=False) as pipe:
            for recipient in batch:
                # The script itself, not its digest: a cluster node may not have it cached.
                pipe.eval(_FOLD, 2, events_key(recipient), purchases_key(recipient), *args)
            folded += sum(int(n) for n in await pipe.execute())
    return folded


async def _read_ledgers(redis: Redis, now: datetime, policy: RfmPolicy) -> dict[str, Metrics]:
    oldest_ms = int(now.timestamp() * 1000) - policy.history_days * DAY_MS
    base: dict[str, Metrics] = {}
    async for batch in _recipients(redis, _LEDGER_PREFIX):
        async with redis.pipeline(transaction=False) as pipe:
            for recipient in batch:
                pipe.hgetall(purchases_key(recipient))
                pipe.zrange(engagement_key(recipient), 0, -1, withscores=True)
            replies = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for i, recipient in enumerate(batch):
                purchases = decode_ledger(replies[2 * i])
                engagement = replies[2 * i + 1]
                activity = activity_of(engagement if isinstance(engagement, list) else [], now)
                metrics = metrics_of(list(purchases.values()), now, policy, activity)
                if metrics is not None:
                    base[recipient] = metrics
                stale = [f for f, p in purchases.items() if p.ts_ms <= oldest_ms]
                if stale:
                    pipe.hdel(purchases_key(recipient), *stale)
            await pipe.execute()
    return base


async def _recipients(redis: Redis, prefix: str) -> AsyncIterator[list[str]]:
    """Recipient ids of the keys starting with `prefix` (and ending in `}`), in batches.

    SCAN may return a key twice; every step a batch feeds is idempotent.
    """
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}*}}", count=_BATCH):
        name = key.decode() if isinstance(key, bytes) else str(key)
        batch.append(name[len(prefix) : -1])
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
