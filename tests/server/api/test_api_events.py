"""`POST /api/v1/events`: one or a batch, all or nothing, idempotent, capped, and seen by rules."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from support import AUTH, data_keys, put_block, signed

from content_sources.redis_keys import event_ids_key, events_key
from server.settings import Settings

Client = TestClient[Any, Any]
URL = "/api/v1/events"
ALREADY_STORED = "an event with this id is already stored"


async def post(client: Client, body: Any) -> Any:
    return await client.post(URL, json=body, headers=AUTH)


def stored_events(store: redis.Redis, rid: str) -> list[dict[str, Any]]:
    """The recipient's events, oldest first, as stored."""
    members = cast(list[bytes], store.zrange(events_key(rid), 0, -1))
    return [orjson.loads(m) for m in members]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def bad_fields(payload: Any) -> list[str]:
    assert payload["error"]["code"] == "invalid"
    return [d["field"] for d in payload["error"]["details"]]


async def test_single_event_is_stored(client: Client, store: redis.Redis) -> None:
    response = await post(
        client,
        {
            "recipient": "u1",
            "type": "purchase",
            "ts": "2030-01-02T03:04:05Z",
            "props": {"total": 19.99, "coupon": None},
            "id": "order-1",
        },
    )
    assert response.status == 202
    assert await response.json() == {"received": 1, "stored": 1, "skipped": []}
    [event] = stored_events(store, "u1")
    assert event["id"] == "order-1"
    assert event["type"] == "purchase"
    assert datetime.fromisoformat(event["ts"]) == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event["props"] == {"total": 19.99}
    # Scored by the event's time in milliseconds, which is what the trimming relies on.
    [(_, score)] = cast(
        list[tuple[bytes, float]], store.zrange(events_key("u1"), 0, -1, withscores=True)
    )
    assert score == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000


async def test_event_without_ts_is_stamped_now(client: Client, store: redis.Redis) -> None:
    before = datetime.now(UTC)
    await post(client, {"recipient": "u1", "type": "view"})
    [event] = stored_events(store, "u1")
    ts = datetime.fromisoformat(event["ts"])
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC) + timedelta(seconds=1)
    assert event["props"] == {}


async def test_batch_stores_every_event_per_recipient(client: Client, store: redis.Redis) -> None:
    batch = [
        {"recipient": "u1", "type": "view"},
        {"recipient": "u1", "type": "cart_abandoned", "props": {"item": "shoes"}},
        {"recipient": "u2", "type": "purchase"},
    ]
    response = await post(client, batch)
    assert response.status == 202
    assert await response.json() == {"received": 3, "stored": 3, "skipped": []}
    assert sorted(e["type"] for e in stored_events(store, "u1")) == ["cart_abandoned", "view"]
    assert [e["type"] for e in stored_events(store, "u2")] == ["purchase"]


async def test_same_id_twice_stores_once(client: Client, store: redis.Redis) -> None:
    event = {"recipient": "u1", "type": "purchase", "id": "order-1"}
    assert await (await post(client, event)).json() == {"received": 1, "stored": 1, "skipped": []}
    again = {"received": 1, "stored": 0, "skipped": [{"index": 0, "reason": ALREADY_STORED}]}
    assert await (await post(client, event)).json() == again
    # A different ts or props under the same id is still the same event.
    changed = {**event, "ts": "2030-01-01T00:00:00Z", "props": {"n": 2}}
    assert await (await post(client, changed)).json() == again
    assert len(stored_events(store, "u1")) == 1
    assert store.hexists(event_ids_key("u1"), "order-1")


async def test_same_id_within_one_batch_stores_once(client: Client, store: redis.Redis) -> None:
    batch = [
        {"recipient": "u1", "type": "purchase", "id": "order-1"},
        {"recipient": "u1", "type": "purchase", "id": "order-1"},
        {"recipient": "u1", "type": "purchase", "id": "order-2"},
    ]
    assert await (await post(client, batch)).json() == {
        "received": 3,
        "stored": 2,
        "skipped": [{"index": 1, "reason": ALREADY_STORED}],
    }
    assert sorted(e["id"] for e in stored_events(store, "u1")) == ["order-1", "order-2"]


async def test_same_id_across_batches_stores_once(client: Client, store: redis.Redis) -> None:
    first = [{"recipient": "u1", "type": "view", "id": f"v{i}"} for i in range(3)]
    second = [{"recipient": "u1", "type": "view", "id": f"v{i}"} for i in range(2, 5)]
    assert (await (await post(client, first)).json())["stored"] == 3
    answer = await (await post(client, second)).json()
    assert (answer["stored"], answer["skipped"]) == (2, [{"index": 0, "reason": ALREADY_STORED}])
    assert sorted(e["id"] for e in stored_events(store, "u1")) == [f"v{i}" for i in range(5)]


async def test_rejected_batch_stores_nothing(client: Client, store: redis.Redis) -> None:
    batch = [
        {"recipient": "u1", "type": "view", "id": "a"},
        {"recipient": "u2", "type": "view", "id": "b"},
        {"recipient": "u1", "type": "not a type!", "id": "c"},
    ]
    response = await post(client, batch)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["[2].type"]
    assert data_keys(store) == []
    # Nothing was remembered either: the good events store when sent again.
    assert (await (await post(client, batch[:2])).json())["stored"] == 2


async def test_every_bad_event_in_a_batch_is_named(client: Client, store: redis.Redis) -> None:
    batch = [
        {"recipient": "u1", "type": "view", "ts": "yesterday"},
        {"recipient": "u1", "type": "view"},
        {"type": "view"},
        {"recipient": "u1", "type": "view", "props": ["x"]},
    ]
    response = await post(client, batch)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["[0].ts", "[2].recipient", "[3].props"]
    assert data_keys(store) == []


INVALID = {
    "bad ts": ({"recipient": "u1", "type": "view", "ts": "not-a-time"}, "ts"),
    "numeric ts": ({"recipient": "u1", "type": "view", "ts": 1700000000}, "ts"),
    "missing recipient": ({"type": "view"}, "recipient"),
    "email recipient": ({"recipient": "ann@example.com", "type": "view"}, "recipient"),
    "missing type": ({"recipient": "u1"}, "type"),
    "props not an object": ({"recipient": "u1", "type": "view", "props": "x"}, "props"),
    "unknown field": ({"recipient": "u1", "type": "view", "when": "now"}, "when"),
    "empty id": ({"recipient": "u1", "type": "view", "id": ""}, "id"),
    "numeric id": ({"recipient": "u1", "type": "view", "id": 7}, "id"),
}


@pytest.mark.parametrize(("event", "field"), list(INVALID.values()), ids=list(INVALID))
async def test_invalid_event_is_422_naming_the_field(
    client: Client, store: redis.Redis, event: dict[str, Any], field: str
) -> None:
    single = await post(client, event)
    assert single.status == 422
    assert bad_fields(await single.json()) == [field]
    in_batch = await post(client, [{"recipient": "u1", "type": "view"}, event])
    assert in_batch.status == 422
    assert bad_fields(await in_batch.json()) == [f"[1].{field}"]
    assert data_keys(store) == []


@pytest.mark.parametrize("body", [[], "view", 3, None])
async def test_body_must_be_an_event_or_a_non_empty_batch(
    client: Client, store: redis.Redis, body: Any
) -> None:
    response = await client.post(
        URL, data=orjson.dumps(body), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 422
    assert bad_fields(await response.json()) == ["body"]
    assert data_keys(store) == []


async def test_batch_over_1000_is_refused(client: Client, store: redis.Redis) -> None:
    batch = [{"recipient": f"u{i % 10}", "type": "view"} for i in range(1001)]
    response = await post(client, batch)
    assert response.status == 422
    assert bad_fields(await response.json()) == ["body"]
    assert data_keys(store) == []
    accepted = await post(client, batch[:1000])
    assert await accepted.json() == {"received": 1000, "stored": 1000, "skipped": []}


async def test_only_the_newest_events_per_recipient_are_kept(
    make_client: Any, settings: Settings, store: redis.Redis
) -> None:
    client = await make_client(dataclasses.replace(settings, events_max_per_recipient=5))
    now = datetime.now(UTC)
    # Sent newest first, in two requests, so neither arrival order nor batching decides.
    events = [
        {"recipient": "u1", "type": "view", "id": f"e{i}", "ts": iso(now - timedelta(minutes=i))}
        for i in range(8)
    ]
    await post(client, events[:3])
    answer = await (await post(client, events[3:])).json()
    kept = stored_events(store, "u1")
    assert [e["id"] for e in kept] == ["e4", "e3", "e2", "e1", "e0"]
    # e5 to e7 (indexes 2 to 4 of the second request) were older than the five kept.
    beyond = "older than the newest 5 events kept for this recipient"
    assert answer == {
        "received": 5,
        "stored": 2,
        "skipped": [{"index": i, "reason": beyond} for i in (2, 3, 4)],
    }
    await post(client, {"recipient": "u1", "type": "view", "id": "late", "ts": iso(now)})
    assert [e["id"] for e in stored_events(store, "u1")] == ["e3", "e2", "e1", "e0", "late"]


async def test_events_older_than_retention_are_trimmed(
    client: Client, settings: Settings, store: redis.Redis
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=settings.events_retention_days, hours=1)
    recent = now - timedelta(days=settings.events_retention_days - 1)
    response = await post(
        client,
        [
            {"recipient": "u1", "type": "view", "id": "old", "ts": iso(old)},
            {"recipient": "u1", "type": "view", "id": "recent", "ts": iso(recent)},
        ],
    )
    assert await response.json() == {
        "received": 2,
        "stored": 1,
        "skipped": [
            {"index": 0, "reason": f"older than retention ({settings.events_retention_days} days)"}
        ],
    }
    assert [e["id"] for e in stored_events(store, "u1")] == ["recent"]
    # The store forgets the recipient's events by itself after the retention window.
    ttl_s = store.ttl(events_key("u1"))
    assert 0 < ttl_s <= settings.events_retention_days * 86_400


VIEWED_TWICE = {
    "width": 100,
    "height": 40,
    "variants": [
        {
            "name": "engaged",
            "when": "events.count('view', days=1) >= 2",
            "layers": [{"type": "fill", "color": "#00ff00"}],
            "link": "https://shop.example.com/engaged",
        }
    ],
    "default": {
        "layers": [{"type": "fill", "color": "#ff0000"}],
        "link": "https://shop.example.com/",
    },
}


async def test_posted_events_are_visible_to_rules(client: Client) -> None:
    await put_block(client, "engage", VIEWED_TWICE)

    async def variant() -> str:
        response = await client.get(signed("/i/engage.png?r=u1"))
        assert response.status == 200
        return str(response.headers["X-Atopen-Variant"])

    assert await variant() == "default"
    await post(client, {"recipient": "u1", "type": "view"})
    assert await variant() == "default"
    # An old view is outside the rule's one-day window.
    two_days_ago = iso(datetime.now(UTC) - timedelta(days=2))
    await post(client, {"recipient": "u1", "type": "view", "ts": two_days_ago})
    assert await variant() == "default"
    await post(client, {"recipient": "u1", "type": "view"})
    assert await variant() == "engaged"
    # Another recipient's events do not count for u1's neighbour.
    other = await client.get(signed("/i/engage.png?r=u2"))
    assert other.headers["X-Atopen-Variant"] == "default"
