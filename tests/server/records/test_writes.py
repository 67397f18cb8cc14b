"""What the record writer leaves in the store: engagement sets bounded and kept 400 days
after the last action, every action of a flush counted, reports split by UTC day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import redis
import redis.asyncio as aioredis
from support import human_record

from content_sources.redis_cluster_pipe import slot_of
from content_sources.redis_keys import engagement_key
from server.records.record import RecordFields
from server.records.reports import block_report
from server.records.writes import (
    ENGAGEMENT_DAYS,
    ENGAGEMENT_MAX,
    ENGAGEMENT_TRIM_EVERY,
    RecordWriter,
)

DAY_MS = 86_400_000


def writer() -> RecordWriter:
    return RecordWriter(max_records=1_000_000, retention_s=86_400, click_memory_s=86_400)


def write(
    store: redis.Redis, records_writer: RecordWriter, records: Sequence[RecordFields], now: float
) -> None:
    with store.pipeline(transaction=False) as pipe:
        for command in records_writer.commands(records, now):
            pipe.execute_command(*command)
        pipe.execute()


def test_an_engagement_set_keeps_about_the_newest_thousand(store: redis.Redis) -> None:
    """One reader's opens, one a flush: the set is trimmed back to the newest 1,000 at
    one write in `ENGAGEMENT_TRIM_EVERY`, so it never holds more than that many over."""
    records_writer = writer()
    start = datetime.now(UTC) - timedelta(days=1)
    sizes = []
    for i in range(ENGAGEMENT_MAX + 200):
        at = start + timedelta(seconds=i)
        write(store, records_writer, [human_record("open", "news", "a", "u1", at)], at.timestamp())
        sizes.append(store.zcard(engagement_key("u1")))
    assert max(sizes) < ENGAGEMENT_MAX + ENGAGEMENT_TRIM_EVERY
    assert min(sizes[-ENGAGEMENT_TRIM_EVERY:]) == ENGAGEMENT_MAX  # trimmed, and only so far
    stored = store.zrange(engagement_key("u1"), 0, -1, withscores=True)
    pairs = cast(list[tuple[bytes, float]], stored)
    scores = [score for _, score in pairs]
    newest = (start + timedelta(seconds=ENGAGEMENT_MAX + 199)).timestamp() * 1000
    assert max(scores) == int(newest)
    assert min(scores) > start.timestamp() * 1000 + 150_000  # the oldest went first


def test_an_engagement_set_outlives_its_last_action_by_400_days(store: redis.Redis) -> None:
    """Written again once its time to live has run down (as 300 days later), the set is
    kept 400 days from then; written twice the same day, at least 400 days from the
    second."""
    records_writer = writer()
    now = datetime.now(UTC)
    key = engagement_key("u1")
    write(store, records_writer, [human_record("open", "news", "a", "u1", now)], now.timestamp())
    assert ENGAGEMENT_DAYS * DAY_MS < store.pttl(key) <= (ENGAGEMENT_DAYS + 1) * DAY_MS
    store.pexpire(key, 100 * DAY_MS)  # what is left of it 300 days on
    write(store, records_writer, [human_record("click", "news", "a", "u1", now)], now.timestamp())
    assert ENGAGEMENT_DAYS * DAY_MS < store.pttl(key) <= (ENGAGEMENT_DAYS + 1) * DAY_MS
    assert store.zcard(key) == 2


def test_every_action_of_one_reader_in_one_flush_counts(store: redis.Redis) -> None:
    """Three blocks of one email opened at once, one of them twice, and a click, in one
    flush: five actions, whatever else the flush holds."""
    now = datetime.now(UTC)
    blocks = ("hero", "offer", "footer", "hero")
    records = [human_record("open", block, "a", "u1", now) for block in blocks]
    records += [human_record("open", "hero", "a", f"other-{i}", now) for i in range(50)]
    records.append(human_record("click", "offer", "a", "u1", now))
    write(store, writer(), records, now.timestamp())
    members = [m.decode() for m in cast(list[bytes], store.zrange(engagement_key("u1"), 0, -1))]
    assert sorted(m.split("\t")[:2] for m in members) == [
        ["c", "offer"],
        ["o", "footer"],
        ["o", "hero"],
        ["o", "hero"],
        ["o", "offer"],
    ]


def test_actions_are_scored_by_their_second(store: redis.Redis) -> None:
    """One time goes with the actions of one second (the newest of them); actions seconds
    apart in one batch keep their own times, and each its own member."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    stamps = [start + timedelta(milliseconds=ms) for ms in (100, 400, 5_000, 5_200)]
    records = [human_record("open", "news", "a", "u1", at) for at in stamps]
    write(store, writer(), records, stamps[-1].timestamp())
    stored = cast(
        list[tuple[bytes, float]], store.zrange(engagement_key("u1"), 0, -1, withscores=True)
    )
    assert len({member for member, _ in stored}) == 4
    assert sorted(int(score) for _, score in stored) == [
        int(stamps[i].timestamp() * 1000) for i in (1, 1, 3, 3)
    ]


async def test_a_flush_around_midnight_counts_each_record_on_its_own_day(
    store: redis.Redis, redis_url: str
) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    before, after = midnight - timedelta(milliseconds=20), midnight + timedelta(milliseconds=20)
    records = [
        human_record("open", "news", "a", "u1", before),
        human_record("open", "news", "a", "u2", before),
        human_record("open", "news", "a", "u1", after),
        human_record("click", "news", "a", "u3", after),
    ]
    write(store, writer(), records, after.timestamp())
    days = [before.date().isoformat(), after.date().isoformat()]
    async with aioredis.from_url(redis_url) as client:
        report = await block_report(client, "news", days, "day", None)
    rows = report["rows"]
    assert isinstance(rows, list)
    assert [
        (row["key"], row["human_opens"], row["clicks"], row["unique_readers"]) for row in rows
    ] == [(days[0], 2, 0, 2), (days[1], 1, 1, 2)]


def test_on_a_cluster_each_engagement_call_writes_one_slots_sets(store: redis.Redis) -> None:
    """Redis Cluster runs a script only on keys of one slot: with `one_slot`, the
    engagement writes are split by slot, and every reader's action still lands."""
    now = datetime.now(UTC)
    readers = [f"u{i}" for i in range(40)]
    records = [human_record("open", "news", "a", r, now) for r in readers]
    commands = writer().commands(records, now.timestamp(), one_slot=True)
    calls = [c for c in commands if c[0] == "EVAL" and "ZADD" in str(c[1])]
    assert len(calls) > 1
    for call in calls:
        keys = call[3 : 3 + int(call[2])]
        assert len({slot_of(str(key)) for key in keys}) == 1
    with store.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()
    assert [store.zcard(engagement_key(r)) for r in readers] == [1] * len(readers)
