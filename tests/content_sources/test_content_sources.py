"""The suite every content source passes, and each source's own behaviour, on a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from content_sources import build_context, build_sources, gather_context
from content_sources.events import Event, EventLog, Events
from content_sources.expressions import Expression, MissingValueError, Template
from content_sources.inventory import InventoryView
from content_sources.redis_keys import events_key, inventory_key, profile_key
from content_sources.source import OpenRequest, Source
from server.settings import Settings

SOURCES = build_sources(Settings(events_max_per_recipient=50).sources)
NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # half an hour before Europe's DST change
GARBAGE: list[object] = [b"not json", b"[1, 2]", 42, None, [b"{", b"\xff\xfe"]]


def full_request(**changes: Any) -> OpenRequest:
    values: dict[str, Any] = {
        "at": NOW,
        "recipient": "u1",
        "params": {"coupon": "X1"},
        "skus": frozenset({"sku-1"}),
        "user_agent": "Mozilla/5.0",
    }
    values.update(changes)
    return OpenRequest(**values)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_every_source_names_itself_and_asks_nothing_without_a_recipient(source: Source) -> None:
    assert source.name.isidentifier()
    anonymous = OpenRequest(at=NOW)
    for command in source.commands(anonymous):
        # Only inventory (a block's literal SKUs) may be read without a recipient.
        assert source.name == "inventory"
        assert command[0] == "MGET"


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
@pytest.mark.parametrize("reply", GARBAGE, ids=repr)
def test_every_source_survives_garbage_replies(source: Source, reply: object) -> None:
    request = full_request()
    replies = [reply for _ in source.commands(request)]
    context = build_context(SOURCES, [() for _ in SOURCES], [], request)
    value = source.build(request, replies, context)
    assert value is not None


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_every_source_survives_no_replies(source: Source) -> None:
    request = full_request()
    context = build_context(SOURCES, [() for _ in SOURCES], [], request)
    assert source.build(request, [], context) is not None


async def test_one_round_trip_gathers_everything(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as store:
        await store.set(
            profile_key("u1"), orjson.dumps({"first_name": "Ann", "tz": "Europe/Warsaw"})
        )
        await store.set(inventory_key("sku-1"), orjson.dumps({"stock": 2, "name": "Boots"}))
        log = EventLog(store, max_per_recipient=50, retention=timedelta(days=30))
        event = Event("e1", "cart_abandoned", NOW - timedelta(hours=2), {"item": "Boots"})
        assert await log.store([("u1", event)], NOW) == [None]  # stored
        names = frozenset({"profile", "events", "inventory", "now", "params", "client", "geo"})
        context = await gather_context(store, SOURCES, full_request(), names)
    assert context["profile"] == {"first_name": "Ann", "tz": "Europe/Warsaw"}
    assert context["params"] == {"coupon": "X1"}
    assert context["client"] == {"kind": "apple_mpp", "is_proxy": True}
    assert context["geo"] == {"source": "none"}
    now = context["now"]
    assert isinstance(now, datetime)
    assert now.utcoffset() == timedelta(hours=1)  # still CET at 00:30 UTC on the DST day
    assert Template("{{ inventory['sku-1'].name }}").render(context) == "Boots"
    assert Expression("events.within('cart_abandoned', hours=3)").holds(context)
    assert not Expression("events.within('cart_abandoned', hours=1)").holds(context)
    assert Template("{{ events.last('cart_abandoned').props.item }}").render(context) == "Boots"
    # The event time is shown in the recipient's zone.
    assert Template("{{ events.last('cart_abandoned').ts.hour }}").render(context) == "23"


async def test_time_zone_order_is_url_then_profile_then_block(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as store:
        await store.set(profile_key("u1"), orjson.dumps({"tz": "Asia/Tokyo"}))
        names = frozenset({"now"})
        cases = [
            (full_request(tz="America/New_York", block_tz="Europe/Warsaw"), -4),
            (full_request(tz="Not/AZone", block_tz="Europe/Warsaw"), 9),
            (full_request(recipient="u2", block_tz="Europe/Warsaw"), 1),
            (full_request(recipient="u2"), 0),
        ]
        for request, hours in cases:
            now = (await gather_context(store, SOURCES, request, names))["now"]
            assert isinstance(now, datetime)
            offset = now.utcoffset()
            assert offset is not None
            assert offset == timedelta(hours=hours)


async def test_events_are_capped_and_kept_newest_first(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as store:
        log = EventLog(store, max_per_recipient=3, retention=timedelta(days=30))
        events = [("u1", Event(f"e{i}", "view", NOW - timedelta(minutes=i), {})) for i in range(6)]
        beyond = "older than the newest 3 events kept for this recipient"
        assert await log.store(events, NOW) == [None] * 3 + [beyond] * 3  # the newest 3 kept
        again = "an event with this id is already stored"
        assert await log.store(events[:2], NOW) == [again] * 2  # same ids: stored once
        kept = [Event.decode(m) for m in await store.zrevrange(events_key("u1"), 0, -1)]
    assert [e.id for e in kept if e] == ["e0", "e1", "e2"]


def test_events_helpers_count_within_windows() -> None:
    events = Events([Event(str(i), "view", NOW - timedelta(days=i), {}) for i in range(10)], NOW)
    assert events.count("view", days=3) == 4
    assert events.count("view") == 10
    assert events.within("view", days=0.5)
    assert not events.within("purchase")
    context = {"events": events}
    with pytest.raises(MissingValueError):
        Template("{{ events.last('purchase').props.amount }}").render(context)


def test_inventory_view_notes_skus_it_was_not_given() -> None:
    view = InventoryView({"sku-1": {"stock": 0}, "sku-2": None})
    context = {"inventory": view, "profile": {"sku": "sku-9"}}
    assert not Expression("inventory['sku-1'].stock > 0").holds(context)
    with pytest.raises(MissingValueError):
        Expression("inventory['sku-2'].stock > 0").holds(context)
    with pytest.raises(MissingValueError):
        Expression("inventory[profile.sku].stock > 0").holds(context)
    assert view.unfetched == {"sku-9"}
