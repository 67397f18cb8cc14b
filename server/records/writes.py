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
from itertools import compress, count, repeat
from operator import eq, is_not, itemgetter

from content_sources.client import ClientKind, classify_client
from content_sources.redis_cluster_pipe import slot_of
from content_sources.redis_keys import engagement_keys, last_click_key, remembered_key
from content_sources.remembered import decode_memory
from content_sources.source import RedisCommand
from server.records.classify import FetchClass, classify_click, classify_open
from server.records.record import RecordFields, encode_batch
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
# A set is trimmed back to `ENGAGEMENT_MAX` at one write in this many: a trim at every
# write removes nothing almost every time and cost the store as much as the write.
ENGAGEMENT_TRIM_EVERY = 8
# How long a click is remembered for the next one's burst check (classify.py, C3).
LAST_CLICK_TTL_MS = 60_000
# Records per stream entry (one entry holds a flush's batch, or this many of it), and
# per engagement script call.
RECORDS_PER_ENTRY = 1_000
RECORDS_PER_ENGAGEMENT_CALL = 1_000
# Actions this close together are scored alike in the engagement sets (rules count them
# by days, and `engagement.last_open` is a time to the second).
MOMENT_MS = 1_000
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

# Adds one kind of action on one block to its readers' engagement sets: the member
# ARGV[5] (type, block, and what makes it unique), scored ARGV[6] (ms) in every KEYS[k]:
# the newest of the actions' times, all of one `MOMENT_MS` (a flush's are its interval
# apart at most), one time sent for thousands of readers instead of one each.
# A set whose time to live is below ARGV[4] (ms: `ENGAGEMENT_DAYS`) is set to expire at
# ARGV[1] (a day later than that): the set outlives its last action by `ENGAGEMENT_DAYS`
# at least, and a set written again the same day is not renewed again (the check does
# not go to the append-only file; a renewal does). A key whose place k plus ARGV[3] is a
# multiple of `ENGAGEMENT_TRIM_EVERY` is trimmed to its newest members, ranks up to
# ARGV[2] (-1 - `ENGAGEMENT_MAX`) removed; the writer moves ARGV[3] on at each call, so
# every set is trimmed at about one write in that many, wherever its reader comes in
# the batch.
ENGAGEMENT_SCRIPT = f"""
local offset = tonumber(ARGV[3])
local renew_below = tonumber(ARGV[4])
local member = ARGV[5]
local score = ARGV[6]
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], score, member)
  if redis.call('PTTL', KEYS[k]) < renew_below then
    redis.call('PEXPIREAT', KEYS[k], ARGV[1])
  end
  if (k + offset) % {ENGAGEMENT_TRIM_EVERY} == 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, ARGV[2])
  end
end
return 0
"""

# Adds the recipients ARGV to each HyperLogLog of KEYS: the readers of one cell (block,
# day, variant, client, country) go into the HyperLogLog of each of its values, and are
# sent once for all of them. At most `RECIPIENTS_PER_UNIQUES_CALL` (Lua's `unpack` takes
# some thousands).
UNIQUES_SCRIPT = """
for k = 1, #KEYS do
  redis.call('PFADD', KEYS[k], unpack(ARGV))
end
return 0
"""
RECIPIENTS_PER_UNIQUES_CALL = 1_000

# An answer to an image request as the image route leaves it: time (s), block, version,
# variant, recipient, User-Agent, country, outcome, and the link a click on it follows
# (None when the answer is not remembered for clicks: a default served for a fault).
PendingOpen = tuple[float, str, int, str, str | None, str | None, str | None, str, str | None]
# A click: time (s), block, version, recipient, link, User-Agent, whether it was a HEAD.
PendingClick = tuple[float, str, int, str | None, str, str | None, bool]

# Members of the engagement sets are unique across processes and flushes: the type and
# block, the process, the flush's number in it (and, for a reader who did the same twice
# in one flush, which time it was).
_MEMBER_PREFIX = f"{os.getpid():x}"
_member_numbers = count()
# A record's fields, by place (see `Record`), read in C over a flush's records.
_TS, _TYPE, _RECIPIENT, _CLASS = itemgetter(0), itemgetter(1), itemgetter(5), itemgetter(7)
# An action in an engagement set: type and block.
_ACTION = itemgetter(1, 2)
# What a report counter depends on: block, variant, client, country, type, fetch class.
_GROUP = itemgetter(2, 4, 6, 8, 1, 7)


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
        self._trim_offset = 0  # ENGAGEMENT_SCRIPT's ARGV[3], moved on at each call

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

    def records(
        self, pending: PendingRecords, click_replies: Sequence[object]
    ) -> list[RecordFields]:
        """Every pending open and click as a record, classified."""
        # A flush's thousands of opens come from a few User-Agents: each classified once.
        classes: dict[str | None, tuple[ClientKind, FetchClass]] = {}
        out: list[RecordFields] = []
        add = out.append
        opens = pending.opens
        for at, block, version, variant, recipient, user_agent, country, outcome, _ in opens:
            known = classes.get(user_agent)
            if known is None:
                kind = classify_client(user_agent).kind
                known = classes[user_agent] = (kind, classify_open(kind, user_agent))
            kind, fetch_class = known
            add(
                (
                    int(at * 1000),
                    "open",
                    block,
                    version,
                    variant,
                    recipient,
                    kind,
                    fetch_class,
                    country,
                    outcome,
                    None,
                )
            )
        out.extend(self._clicks(pending.clicks, click_replies))
        return out

    def commands(
        self, records: Sequence[RecordFields], now: float | None = None, *, one_slot: bool = False
    ) -> list[RedisCommand]:
        """The writes that keep `records`: stream, report counters, engagement.
        `one_slot`: each script call writes keys of one slot (as Redis Cluster needs)."""
        if not records:
            return []
        now = time.time() if now is None else now
        commands = self._append(records, now)
        humans = list(compress(records, map(eq, map(_CLASS, records), repeat("human"))))
        signed = list(compress(humans, map(is_not, map(_RECIPIENT, humans), repeat(None))))
        commands.extend(_report_commands(records, signed))
        commands.extend(self._engagement_commands(signed, now, one_slot))
        if "click" in map(_TYPE, records):
            last_clicks = {
                _RECIPIENT(r): _TS(r)
                for r in records
                if _TYPE(r) == "click" and _RECIPIENT(r) is not None
            }
            commands.extend(
                ("SET", last_click_key(recipient), ts_ms, "PX", LAST_CLICK_TTL_MS)
                for recipient, ts_ms in last_clicks.items()
            )
        return commands

    def _clicks(
        self, clicks: Sequence[PendingClick], replies: Sequence[object]
    ) -> list[RecordFields]:
        reply = iter(replies)
        previous: dict[str, float] = {}  # the recipient's previous click, as seen so far
        out: list[RecordFields] = []
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
                (
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

    def _append(self, records: Sequence[RecordFields], now: float) -> list[RedisCommand]:
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

    def _engagement_commands(
        self, signed: Sequence[RecordFields], now: float, one_slot: bool
    ) -> list[RedisCommand]:
        """`signed`'s human opens and clicks into their recipients' engagement sets: one
        script call per kind of action and block (and slot, on a cluster), whose member
        is sent once for the thousands of readers who did the same in this flush."""
        unique = f"{_MEMBER_PREFIX}.{next(_member_numbers)}"
        kept_ms = ENGAGEMENT_DAYS * 86_400_000
        head: list[str | bytes | int] = [
            int(now * 1000) + kept_ms + 86_400_000,
            -1 - ENGAGEMENT_MAX,
            0,  # the trim offset, below
            kept_ms,
        ]
        commands: list[RedisCommand] = []
        for (type_, block), group in _by_action(signed):
            member = f"{type_[0]}\t{block}\t{unique}"
            keys = engagement_keys(map(_RECIPIENT, group))
            for newest, moment, moment_keys in _by_moment(member, keys, list(map(_TS, group))):
                for name, part_keys in _one_member_each(moment, moment_keys):
                    for call_keys in _calls(part_keys, one_slot):
                        self._trim_offset = (self._trim_offset + 1) % ENGAGEMENT_TRIM_EVERY
                        head[2] = self._trim_offset
                        commands.append(
                            (
                                "EVAL",
                                ENGAGEMENT_SCRIPT,
                                len(call_keys),
                                *call_keys,
                                *head,
                                name,
                                newest,
                            )
                        )
        return commands


def _by_action(
    signed: Sequence[RecordFields],
) -> list[tuple[tuple[str, str], Sequence[RecordFields]]]:
    """The records by type and block: a flush's are of a few blocks, read apart in C."""
    actions = list(map(_ACTION, signed))
    distinct = set(actions)
    if len(distinct) == 1:
        return [(distinct.pop(), signed)]
    return [
        (action, list(compress(signed, map(eq, actions, repeat(action))))) for action in distinct
    ]


def _by_moment(member: str, keys: list[str], stamps: list[int]) -> list[tuple[int, str, list[str]]]:
    """`keys` by the second of their action (`stamps`, ms), each second's with the newest
    of its times and `member` made its own (`member~1`, ...): a flush's actions are all
    of one moment (its interval apart at most), and a set's scores are times to the
    second, not to the millisecond."""
    newest = max(stamps)
    if newest - min(stamps) < MOMENT_MS:
        return [(newest, member, keys)]
    moments: defaultdict[int, tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
    for key, stamp in zip(keys, stamps, strict=True):
        moment_stamps, moment_keys = moments[stamp // MOMENT_MS]
        moment_stamps.append(stamp)
        moment_keys.append(key)
    return [
        (max(moment_stamps), f"{member}~{n}", moment_keys)
        for n, (moment_stamps, moment_keys) in enumerate(moments.values())
    ]


def _one_member_each(member: str, keys: list[str]) -> list[tuple[str, list[str]]]:
    """`member` for every key, but a reader who did the same twice in one flush (opened
    one block twice) gets `member.1` for the second time, and so on: each action its
    own member, or the second would only move the first."""
    if len(set(keys)) == len(keys):
        return [(member, keys)]
    times: Counter[str] = Counter()
    parts: defaultdict[int, list[str]] = defaultdict(list)
    for key in keys:
        parts[times[key]].append(key)
        times[key] += 1
    return [(member if n == 0 else f"{member}.{n}", part) for n, part in parts.items()]


def _calls(keys: list[str], one_slot: bool) -> list[list[str]]:
    """`keys` in parts of `RECORDS_PER_ENGAGEMENT_CALL`; with `one_slot`, each part's keys
    of one slot (a script on Redis Cluster writes one slot's keys)."""
    groups = [keys]
    if one_slot:
        by_slot: defaultdict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_slot[slot_of(key)].append(key)
        groups = list(by_slot.values())
    return [
        group[start : start + RECORDS_PER_ENGAGEMENT_CALL]
        for group in groups
        for start in range(0, len(group), RECORDS_PER_ENGAGEMENT_CALL)
    ]


def _report_commands(
    records: Sequence[RecordFields], signed: Sequence[RecordFields]
) -> list[RedisCommand]:
    """Counters by block, day and each dimension's value, and the unique readers and
    clickers as HyperLogLogs (Redis's own `PFADD`): the human records of `signed`. A
    person's click shows they read the message, so a human clicker is a reader too (an
    Apple Mail reader's opens are all prefetches).

    The records are counted by everything a counter depends on (a flush's thousands of
    opens make a handful of groups), the signed ones gathered by everything a
    HyperLogLog depends on; then each group is spread over the dimensions."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for day, group in _by_day(records):
        for (block, variant, client, country, type_, fetch_class), n in Counter(
            map(_GROUP, group)
        ).items():
            human = fetch_class == "human"
            metrics: tuple[str, ...]
            if type_ == "open":
                metrics = ("impressions", "human_opens" if human else "machine_fetches")
            else:
                metrics = ("clicks",) if human else ()
            for name in _dimension_fields(variant, client, country):
                for metric in metrics:
                    counts[(block, day, f"{name}={metric}")] += n
    commands: list[RedisCommand] = []
    hashes = set()
    for (block, day, name), n in counts.items():
        commands.append(("HINCRBY", stats_key(block, day), name, n))
        hashes.add(stats_key(block, day))
    commands.extend(("EXPIRE", key, STATS_TTL_S) for key in hashes)
    uniques: set[str] = set()
    for day, group in _by_day(signed):
        cells: defaultdict[tuple[str, str | None, str, str | None, str], list[str]] = defaultdict(
            list
        )
        for _, type_, block, _, variant, recipient, client, _, country, _, _ in group:
            # `signed` holds no record without a recipient
            cells[(block, variant, client, country, type_)].append(recipient)  # type: ignore[arg-type]
        for (block, variant, client, country, type_), recipients in cells.items():
            names = _dimension_fields(variant, client, country)
            keys = [readers_key(block, day, name) for name in names]
            if type_ == "click":
                keys += [clickers_key(block, day, name) for name in names]
            uniques.update(keys)
            for start in range(0, len(recipients), RECIPIENTS_PER_UNIQUES_CALL):
                part = recipients[start : start + RECIPIENTS_PER_UNIQUES_CALL]
                commands.append(("EVAL", UNIQUES_SCRIPT, len(keys), *keys, *part))
    commands.extend(("EXPIRE", key, STATS_TTL_S) for key in uniques)
    return commands


def _dimension_fields(variant: str | None, client: str, country: str | None) -> list[str]:
    """The counters' and HyperLogLogs' names a record's variant, client and country go
    under (`variant=a`, ...; see `stats_field`)."""
    values = (variant or "unknown", client, country or "unknown")
    return [stats_field(d, v) for d, v in zip(DIMENSIONS, values, strict=True)]


def _by_day(records: Sequence[RecordFields]) -> list[tuple[str, Sequence[RecordFields]]]:
    """The records by UTC day: a flush's are of one day, but for one around midnight."""
    if not records:
        return []
    stamps = list(map(_TS, records))
    first, last = min(stamps) // 86_400_000, max(stamps) // 86_400_000
    if first == last:
        return [(utc_day(stamps[0]), records)]
    days: defaultdict[str, list[RecordFields]] = defaultdict(list)
    for ts_ms, record in zip(stamps, records, strict=True):
        days[utc_day(ts_ms)].append(record)
    return list(days.items())


def record_writer(settings: Settings) -> RecordWriter | None:
    """The record writer the settings ask for; None when recording is off."""
    if settings.records_max == 0:
        return None
    return RecordWriter(
        max_records=settings.records_max,
        retention_s=settings.records_days * 86_400,
        click_memory_s=settings.click_memory_days * 86_400,
    )
