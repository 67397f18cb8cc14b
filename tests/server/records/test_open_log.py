"""The opens' batched writes: impressions and click memories, flushed to a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from content_sources.redis_keys import remembered_key
from content_sources.remembered import decode_memory
from server.opens.query import ImageAnswer
from server.outcomes import FallbackReason, Outcome
from server.records.open_log import MEMORIES_PER_CALL, OpenLog, impressions_key

MEMORY_S = 30 * 86_400


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def memory(redis: Redis, recipient: str, block_id: str) -> dict[str, object] | None:
    raw = await redis.hget(remembered_key(recipient), block_id)
    return decode_memory(raw, datetime.now(UTC), MEMORY_S)


def shown(log: OpenLog, block: str, recipient: str | None, variant: str, link: str) -> None:
    """An answer that showed `variant` to `recipient`, its click going to `link`."""
    answer = ImageAnswer(b"", variant, Outcome.CACHED, recipient, None, link)
    log.answered(block, 1, answer, "Mozilla/5.0")


async def test_a_flush_counts_every_open_and_remembers_each_recipients_newest(
    redis: Redis,
) -> None:
    log = OpenLog(redis, click_memory_s=MEMORY_S)
    # More recipients than one command takes, in two groups that share an entry.
    recipients = [f"r{i}" for i in range(MEMORIES_PER_CALL + 300)]
    for i, recipient in enumerate(recipients):
        variant = "sale" if i % 3 else "default"
        shown(log, "hero", recipient, variant, f"https://shop.example/{variant}")
    shown(log, "hero", "r1", "default", "https://shop.example/default")  # r1 again: newest
    shown(log, "footer", "r1", "plain", "https://shop.example/")
    shown(log, "hero", None, "default", "https://shop.example/default")  # unsigned
    # A default served for a fault is neither an impression nor remembered for the click.
    fault = ImageAnswer(b"", "default", Outcome.fallback(FallbackReason.DEADLINE), "r2")
    log.answered("hero", 1, fault, None)
    await redis.config_resetstat()
    await log.flush()

    day = datetime.now(UTC).date().isoformat()
    counted = await redis.hgetall(impressions_key("hero", day))
    sales = sum(1 for i in range(len(recipients)) if i % 3)
    assert counted == {b"sale": str(sales).encode(), b"default": str(802 - sales).encode()}
    assert await redis.hgetall(impressions_key("footer", day)) == {b"plain": b"1"}
    stats = await redis.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 2  # 801 memories, 500 per command

    for i in (0, 2, 3, 500, 799):
        expected = "sale" if i % 3 else "default"
        remembered = await memory(redis, f"r{i}", "hero")
        assert remembered is not None
        assert remembered["variant"] == expected
        assert remembered["link"] == f"https://shop.example/{expected}"
    newest = await memory(redis, "r1", "hero")
    assert newest is not None
    assert newest["variant"] == "default"
    footer = await memory(redis, "r1", "footer")
    assert footer is not None
    assert footer["link"] == "https://shop.example/"
    ttl = await redis.ttl(remembered_key("r799"))
    assert MEMORY_S - 60 < ttl <= MEMORY_S


async def test_nothing_recorded_writes_nothing(redis: Redis) -> None:
    log = OpenLog(redis, click_memory_s=MEMORY_S)
    await redis.config_resetstat()
    await log.flush()
    assert "cmdstat_eval" not in await redis.info("commandstats")
    assert await redis.dbsize() == 0
