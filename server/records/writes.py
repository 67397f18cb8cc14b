"""What the open log writes for records: the stream, the report counters, engagement.

An open or a click only appends a tuple here (no classification, no encoding, no
store); the open log's flush, every few milliseconds and off the response path, turns
the batch into store commands:

- one script that appends the batch's records to the stream and trims it to
  `max_records` and `retention_s` (see `stream.py`);
- per block and UTC day, one hash of counters by variant, client and country, and
  HyperLogLogs of the human readers and clickers (see `reports.py`);
- per recipient, their human opens and clicks in a sorted set (what `engagement` reads).

Clicks need one read first, for their fetch class (classify.py): when the block's image
was last fetched for that recipient, and when they last clicked.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count

from content_sources.client import ClientKind, classify_client
from content_sources.redis_cluster_pipe import slot_of
from content_sources.redis_keys import engagement_key, last_click_key, remembered_key
from content_sources.remembered import decode_memory
from content_sources.source import RedisCommand
from server.records.classify import FetchClass, classify_click, classify_open
from server.records.record import Record, encode_batch
from server.records.record_keys import (
    COUNT_KEY,
    DIMENSIONS,
    STATS_TTL_S,
    STREAM_KEY,
    TRIMMED_KEY,
    clickers_key,
    readers_key,
    stats_field,
    stats_key,
    utc_day,
)
from server.settings import Settings

# Engagement keeps each recipient's newest human opens and clicks, this many, in a set
# that expires this many days after the last.
ENGAGEMENT_MAX = 1_000
ENGAGEMENT_DAYS = 400
# How long a click is remembered for the next one's burst check (classify.py, C3).
LAST_CLICK_TTL_MS = 60_000
# Records per stream entry (one entry holds a flush's batch, or this many of it), and
# recipients per engagement script call.
RECORDS_PER_ENTRY = 1_000
RECIPIENTS_PER_CALL = 500
# The most entries one flush trims: a lowered limit is reached over several flushes.
_MAX_TRIM = 1_000

# Appends one entry to the stream KEYS[1]: ARGV[4], a JSON array of ARGV[3] records. Then
# removes the oldest entries while the stream holds more than ARGV[1] records (counted
# in KEYS[3]) or they are older than ARGV[2] (ms), never the new one, and notes in KEYS[2]
# the newest entry removed: a cursor before it has missed records (the export's 410).
APPEND_SCRIPT = f"""
local added = redis.call('XADD', KEYS[1], '*', 'n', ARGV[3], 'r', ARGV[4])
local total = redis.call('INCRBY', KEYS[3], ARGV[3])
local cut = nil
local from = '-'
for i = 1, {_MAX_TRIM} do
  local oldest = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 1)[1]
  if oldest == nil or oldest[1] == added then break end
  local ms = tonumber(string.match(oldest[1], '^(%d+)'))
  if total <= tonumber(ARGV[1]) and ms >= tonumber(ARGV[2]) then break end
  total = total - tonumber(oldest[2][2])
  cut = oldest[1]
  from = '(' .. cut
end
if cut ~= nil then
  local ms, seq = string.match(cut, '(%d+)-(%d+)')
  redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. (tonumber(seq) + 1))
  redis.call('SET', KEYS[2], cut)
  redis.call('SET', KEYS[3], total)
end
return total
"""

# Adds recipients' human opens and clicks to their engagement sets, keeps the newest
# ARGV[1] of each and renews its TTL (ARGV[2] seconds: a set outlives its last action by
# that long). No trim by age: what rules read is counted by time anyway, and a set is
# bounded by its count. KEYS: the sets. ARGV: most kept, TTL, then per key how many
# (score, member) pairs follow, and the pairs.
ENGAGEMENT_SCRIPT = """
local a = 3
for k = 1, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call('ZADD', KEYS[k], unpack(ARGV, a + 1, a + 2 * n))
  a = a + 1 + 2 * n
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(tonumber(ARGV[1]) + 1))
  redis.call('EXPIRE', KEYS[k], ARGV[2])
end
return 0
"""

# An open as the image route leaves it: time (s), block, version, variant, recipient,
# User-Agent, country, outcome.
PendingOpen = tuple[float, str, int, str, str | None, str | None, str | None, str]
# A click: time (s), block, version, recipient, link, User-Agent, whether it was a HEAD.
PendingClick = tuple[float, str, int, str | None, str, str | None, bool]

# Members of the engagement sets are unique across processes and flushes.
_MEMBER_PREFIX = f"{os.getpid():x}"
_member_numbers = count()


@dataclass(slots=True)
class PendingRecords:
    opens: list[PendingOpen] = field(default_factory=list)
    clicks: list[PendingClick] = field(default_factory=list)


class RecordWriter:
    """Turns a flush's opens and clicks into records and the commands that keep them."""

    def __init__(self, *, max_records: int, retention_s: int, click_memory_s: int) -> None:
        self.max_records = max_records
        self._retention_s = retention_s
        self._click_memory_s = click_memory_s

    def click_reads(self, clicks: Sequence[PendingClick]) -> list[RedisCommand]:
        """What classifying `clicks` needs read first: two commands per click."""
        commands: list[RedisCommand] = []
        for _, block, _, recipient, _, _, _ in clicks:
            if recipient is None:
                continue
            commands.append(("HGET", remembered_key(recipient), block))
            commands.append(("GET", last_click_key(recipient)))
        return commands

    def flush_commands(
        self, pending: PendingRecords, click_replies: Sequence[object], *, one_slot: bool = False
    ) -> list[RedisCommand]:
        """The writes that record `pending` (`click_replies`: the replies to `click_reads`)."""
        return self.commands(self.records(pending, click_replies), one_slot=one_slot)

    def records(self, pending: PendingRecords, click_replies: Sequence[object]) -> list[Record]:
        """Every pending open and click as a record, classified."""
        # A flush's thousands of opens come from a few User-Agents: each classified once.
        classes: dict[str | None, tuple[ClientKind, FetchClass]] = {}
        out = []
        for at, block, version, variant, recipient, user_agent, country, outcome in pending.opens:
            known = classes.get(user_agent)
            if known is None:
                kind = classify_client(user_agent).kind
                known = classes[user_agent] = (kind, classify_open(kind, user_agent))
            out.append(
                Record(
                    int(at * 1000),
                    "open",
                    block,
                    version,
                    variant,
                    recipient,
                    known[0],
                    known[1],
                    country,
                    outcome,
                    None,
                )
            )
        out.extend(self._clicks(pending.clicks, click_replies))
        return out

    def commands(
        self, records: Sequence[Record], now: float | None = None, *, one_slot: bool = False
    ) -> list[RedisCommand]:
        """The writes that keep `records`: stream, report counters, engagement.
        `one_slot`: each script call writes keys of one slot (as Redis Cluster needs)."""
        if not records:
            return []
        now = time.time() if now is None else now
        commands = self._append(records, now)
        commands.extend(_report_commands(records))
        commands.extend(_engagement_commands(records, now, one_slot))
        last_clicks = {
            r.recipient: r.ts_ms for r in records if r.type == "click" and r.recipient is not None
        }
        commands.extend(
            ("SET", last_click_key(recipient), ts_ms, "PX", LAST_CLICK_TTL_MS)
            for recipient, ts_ms in last_clicks.items()
        )
        return commands

    def _clicks(self, clicks: Sequence[PendingClick], replies: Sequence[object]) -> list[Record]:
        reply = iter(replies)
        previous: dict[str, float] = {}  # the recipient's previous click, as seen so far
        out = []
        for at, block, version, recipient, link, user_agent, head in sorted(clicks):
            kind = classify_client(user_agent).kind
            variant = None
            after_fetch = after_click = None
            if recipient is not None:
                memory, last_click = next(reply, None), next(reply, None)
                entry = decode_memory(memory, datetime.fromtimestamp(at, UTC), self._click_memory_s)
                if entry is not None and isinstance(fetched := entry["at"], datetime):
                    variant = str(entry["variant"])
                    after_fetch = at - fetched.timestamp()
                earlier = previous.get(recipient)
                if earlier is None and isinstance(last_click, bytes | str):
                    earlier = int(last_click) / 1000
                if earlier is not None:
                    after_click = at - earlier
                previous[recipient] = at
            fetch_class = classify_click(
                kind,
                user_agent,
                after_fetch_s=after_fetch,
                after_previous_click_s=after_click,
                head=head,
            )
            out.append(
                Record(
                    int(at * 1000),
                    "click",
                    block,
                    version,
                    variant,
                    recipient,
                    kind,
                    fetch_class,
                    None,
                    None,
                    link,
                )
            )
        return out

    def _append(self, records: Sequence[Record], now: float) -> list[RedisCommand]:
        """One stream entry per `RECORDS_PER_ENTRY` records: the store does one XADD for
        a flush's thousands of opens, and keeps them in about the bytes of their JSON."""
        oldest_ms = int((now - self._retention_s) * 1000)
        commands: list[RedisCommand] = []
        for start in range(0, len(records), RECORDS_PER_ENTRY):
            part = records[start : start + RECORDS_PER_ENTRY]
            commands.append(
                (
                    "EVAL",
                    APPEND_SCRIPT,
                    3,
                    STREAM_KEY,
                    TRIMMED_KEY,
                    COUNT_KEY,
                    self.max_records,
                    oldest_ms,
                    len(part),
                    encode_batch(part),
                )
            )
        return commands


def _report_commands(records: Sequence[Record]) -> list[RedisCommand]:
    """Counters by block, day and each dimension's value, and the unique readers and
    clickers as HyperLogLogs (Redis's own `PFADD`). A person's click shows they read the
    message, so a human clicker is a reader too (an Apple Mail reader's opens are all
    prefetches).

    The records are grouped first by everything a counter or a HyperLogLog depends on
    (a flush's thousands of opens make a handful of groups), then each group is spread
    over the dimensions."""
    groups: Counter[tuple[str, str, str, str, str, str, str]] = Counter(
        (
            r.block,
            utc_day(r.ts_ms),
            r.variant or "unknown",
            r.client,
            r.country or "unknown",
            r.type,
            r.fetch_class,
        )
        for r in records
    )
    people: defaultdict[tuple[str, str, str, str, str, str], set[str]] = defaultdict(set)
    for r in records:
        if r.fetch_class == "human" and r.recipient is not None:
            group = (r.block, utc_day(r.ts_ms), r.variant or "unknown", r.client)
            people[(*group, r.country or "unknown", r.type)].add(r.recipient)
    counts: Counter[tuple[str, str, str]] = Counter()
    for (block, day, *values, type_, fetch_class), n in groups.items():
        human = fetch_class == "human"
        metrics: tuple[str, ...]
        if type_ == "open":
            metrics = ("impressions", "human_opens" if human else "machine_fetches")
        else:
            metrics = ("clicks",) if human else ()
        for dimension, value in zip(DIMENSIONS, values, strict=True):
            for metric in metrics:
                counts[(block, day, stats_field(dimension, value, metric))] += n
    readers: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    clickers: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    for (block, day, *values, type_), recipients in people.items():
        for dimension, value in zip(DIMENSIONS, values, strict=True):
            name = stats_field(dimension, value)
            readers[(block, day, name)].update(recipients)
            if type_ == "click":
                clickers[(block, day, name)].update(recipients)
    commands: list[RedisCommand] = []
    hashes = set()
    for (block, day, name), n in counts.items():
        commands.append(("HINCRBY", stats_key(block, day), name, n))
        hashes.add(stats_key(block, day))
    commands.extend(("EXPIRE", key, STATS_TTL_S) for key in hashes)
    for key_of, sets in ((readers_key, readers), (clickers_key, clickers)):
        for (block, day, name), members in sets.items():
            key = key_of(block, day, name)
            commands.append(("PFADD", key, *members))
            commands.append(("EXPIRE", key, STATS_TTL_S))
    return commands


def _engagement_commands(
    records: Sequence[Record], now: float, one_slot: bool
) -> list[RedisCommand]:
    by_recipient: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        if r.fetch_class == "human" and r.recipient is not None:
            member = f"{r.type[0]}\t{r.block}\t{_MEMBER_PREFIX}.{next(_member_numbers)}"
            by_recipient[r.recipient].append((r.ts_ms, member))
    if not by_recipient:
        return []
    head: list[str | bytes | int] = [ENGAGEMENT_MAX, ENGAGEMENT_DAYS * 86_400]
    commands: list[RedisCommand] = []
    groups = [list(by_recipient)]
    if one_slot:
        by_slot: defaultdict[int, list[str]] = defaultdict(list)
        for recipient in by_recipient:
            by_slot[slot_of(engagement_key(recipient))].append(recipient)
        groups = list(by_slot.values())
    parts = (
        group[start : start + RECIPIENTS_PER_CALL]
        for group in groups
        for start in range(0, len(group), RECIPIENTS_PER_CALL)
    )
    for part in parts:
        args: list[str | bytes | int] = list(head)
        for recipient in part:
            pairs = by_recipient[recipient]
            args.append(len(pairs))
            for score, member in pairs:
                args.extend((score, member))
        keys = [engagement_key(r) for r in part]
        commands.append(("EVAL", ENGAGEMENT_SCRIPT, len(keys), *keys, *args))
    return commands


def record_writer(settings: Settings) -> RecordWriter | None:
    """The record writer the settings ask for; None when recording is off."""
    if settings.records_max == 0:
        return None
    return RecordWriter(
        max_records=settings.records_max,
        retention_s=settings.records_days * 86_400,
        click_memory_s=settings.click_memory_days * 86_400,
    )
