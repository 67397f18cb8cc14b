"""`POST /api/v1/segment`: the Segment Spec's identify, track and batch calls feed profiles
and events, tested with the Spec's own example payloads."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, put_block

from content_sources.redis_keys import events_key, profile_key, purchases_key
from server.api_tokens import ApiToken, Scope
from server.settings import Settings

URL = "/api/v1/segment"

# From "Spec: Identify", https://segment.com/docs/connections/spec/identify/ (the payload
# "with most common fields removed").
IDENTIFY_TYPICAL: dict[str, Any] = {
    "type": "identify",
    "traits": {
        "name": "Peter Gibbons",
        "email": "peter@example.com",
        "plan": "premium",
        "logins": 5,
    },
    "userId": "97980cfea0067",
}

# From "Spec: Identify", https://segment.com/docs/connections/spec/identify/ ("a complete
# example of an identify call").
IDENTIFY_COMPLETE: dict[str, Any] = {
    "anonymousId": "507f191e810c19729de860ea",
    "channel": "browser",
    "context": {
        "ip": "8.8.8.8",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_5) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/40.0.2214.115 Safari/537.36",
    },
    "integrations": {"All": False, "Mixpanel": True, "Salesforce": True},
    "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
    "receivedAt": "2015-02-23T22:28:55.387Z",
    "sentAt": "2015-02-23T22:28:55.111Z",
    "timestamp": "2015-02-23T22:28:55.111Z",
    "traits": {
        "name": "Peter Gibbons",
        "email": "peter@example.com",
        "plan": "premium",
        "logins": 5,
        "address": {
            "street": "6th St",
            "city": "San Francisco",
            "state": "CA",
            "postalCode": "94103",
            "country": "USA",
        },
    },
    "type": "identify",
    "userId": "97980cfea0067",
    "version": "1.1",
}

# From "Spec: Track", https://segment.com/docs/connections/spec/track/ (the payload "with
# most common fields removed": it has neither a userId nor an anonymousId).
TRACK_TYPICAL: dict[str, Any] = {
    "type": "track",
    "event": "Registered",
    "properties": {"plan": "Pro Annual", "accountType": "Facebook"},
}

# From "Spec: Track", https://segment.com/docs/connections/spec/track/ ("a complete example
# of a track call").
TRACK_COMPLETE: dict[str, Any] = {
    "anonymousId": "23adfd82-aa0f-45a7-a756-24f2a7a4c895",
    "context": {
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "page": {
            "path": "/academy/",
            "referrer": "",
            "search": "",
            "title": "Analytics Academy",
            "url": "https://segment.com/academy/",
        },
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/46.0.2490.86 Safari/537.36",
        "ip": "108.0.78.21",
    },
    "event": "Course Clicked",
    "integrations": {},
    "messageId": "ajs-f8ca1e4de5024d9430b3928bd8ac6b96",
    "properties": {"title": "Intro to Analytics"},
    "receivedAt": "2015-12-12T19:11:01.266Z",
    "sentAt": "2015-12-12T19:11:01.169Z",
    "timestamp": "2015-12-12T19:11:01.249Z",
    "type": "track",
    "userId": "AiUGstSDIg",
    "originalTimestamp": "2015-12-12T19:11:01.152Z",
}

# From the HTTP Tracking API's "Batch" section,
# https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#batch
# (its last two timestamps, `2015-2-02T...`, are written with a one-digit month).
BATCH: dict[str, Any] = {
    "batch": [
        {
            "type": "identify",
            "userId": "019mr8mf4r",
            "traits": {"email": "jake@yahoo.com", "name": "Jake Peterson", "age": 26},
            "timestamp": "2012-12-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "019mr8mf4r",
            "event": "Song Played",
            "properties": {"name": "Fallin for You", "artist": "Dierks Bentley"},
            "timestamp": "2012-12-02T00:30:12.984Z",
        },
        {
            "type": "identify",
            "userId": "971mj8mk7p",
            "traits": {"email": "cindy@example.com", "name": "Cindy Gonzalez", "age": 23},
            "timestamp": "2015-2-02T00:30:08.276Z",
        },
        {
            "type": "track",
            "userId": "971mj8mk7p",
            "event": "Song Played",
            "properties": {"name": "Get Right", "artist": "Jennifer Lopez"},
            "timestamp": "2015-2-02T00:30:12.984Z",
        },
    ],
    "writeKey": "YOUR_WRITE_KEY",
    "context": {"device": {"type": "phone", "name": "Apple iPhone 6"}},
}


def recent(call: dict[str, Any]) -> dict[str, Any]:
    """`call` as if sent now: the Spec's examples are from 2015, older than any retention."""
    fresh = copy.deepcopy(call)
    fresh["timestamp"] = datetime.now(UTC).isoformat()
    return fresh


async def post(client: TestClient[Any, Any], body: Any, status: int = 200) -> dict[str, Any]:
    response = await client.post(URL, json=body, headers=AUTH)
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def profile(client: TestClient[Any, Any], recipient: str) -> dict[str, Any] | None:
    response = await client.get(f"/api/v1/profiles/{recipient}", headers=AUTH)
    if response.status == 404:
        return None
    stored: dict[str, Any] = (await response.json())["profile"]
    return stored


async def variant(client: TestClient[Any, Any], block: dict[str, Any], recipient: str) -> str:
    """The variant `recipient` would get now, from the preview."""
    await put_block(client, "seen", block)
    response = await client.post(
        "/api/v1/blocks/seen/preview",
        json={"recipient": recipient},
        headers={**AUTH, "Accept": "application/json"},
    )
    name: str = (await response.json())["variant"]
    return name


def block_when(rule: str, text: str = "Hello") -> dict[str, Any]:
    return {
        "width": 200,
        "height": 40,
        "variants": [
            {
                "name": "yes",
                "when": rule,
                "layers": [{"type": "text", "box": [0, 0, 200, 40], "text": text}],
            }
        ],
        "default": {
            "layers": [{"type": "fill", "color": "#222222"}],
            "link": "https://shop.example.com/",
        },
    }


async def test_identify_merges_the_traits_into_the_profile(client: TestClient[Any, Any]) -> None:
    response = await client.put(
        "/api/v1/profiles/97980cfea0067", json={"tier": "gold", "plan": "basic"}, headers=AUTH
    )
    assert response.status == 200
    answer = await post(client, IDENTIFY_TYPICAL)
    assert answer == {"received": 1, "identified": 1, "stored": 0, "skipped": []}
    # Merged: the profile's own field stays, a trait replaces what it names. The email
    # address is not kept.
    assert await profile(client, "97980cfea0067") == {
        "tier": "gold",
        "plan": "premium",
        "name": "Peter Gibbons",
        "logins": 5,
    }


async def test_identify_with_an_address_gives_the_profile_a_place(
    client: TestClient[Any, Any],
) -> None:
    await post(client, IDENTIFY_COMPLETE)
    stored = await profile(client, "97980cfea0067")
    assert stored is not None
    assert stored["city"] == "San Francisco"
    assert stored["postal"] == "94103"
    assert "country" not in stored  # "USA" is not an ISO 3166 code, which geo reads
    assert stored["address"]["street"] == "6th St"
    assert "email" not in stored


async def test_reserved_traits_in_camel_case_are_stored_as_rules_read_them(
    client: TestClient[Any, Any],
) -> None:
    call = {
        "type": "identify",
        "userId": "u1",
        "traits": {"firstName": "Peter", "lastName": "Gibbons", "createdAt": "2015-02-23"},
        "context": {"timezone": "America/Los_Angeles"},
    }
    await post(client, call)
    assert await profile(client, "u1") == {
        "first_name": "Peter",
        "last_name": "Gibbons",
        "created_at": "2015-02-23",
        "tz": "America/Los_Angeles",
    }
    block = block_when("now.tzinfo.key == 'America/Los_Angeles'", "Hi {{ profile.first_name }}")
    assert await variant(client, block, "u1") == "yes"


async def test_a_null_trait_removes_the_field(client: TestClient[Any, Any]) -> None:
    await post(client, IDENTIFY_TYPICAL)
    await post(client, {"type": "identify", "userId": "97980cfea0067", "traits": {"plan": None}})
    stored = await profile(client, "97980cfea0067")
    assert stored is not None
    assert "plan" not in stored
    assert stored["name"] == "Peter Gibbons"


async def test_track_stores_an_event_rules_see_once_per_message_id(
    client: TestClient[Any, Any],
) -> None:
    call = recent(TRACK_COMPLETE)
    answer = await post(client, call)
    assert answer == {"received": 1, "identified": 0, "stored": 1, "skipped": []}
    # Segment retries deliver the same messageId again: stored once.
    again = await post(client, call)
    assert again["stored"] == 0
    assert again["skipped"] == [{"index": 0, "reason": "an event with this id is already stored"}]
    rule = "events.count('course_clicked', days=1) == 1"
    text = "{{ events.last('course_clicked').props.title }}"
    assert await variant(client, block_when(rule, text), "AiUGstSDIg") == "yes"


async def test_the_complete_track_example_is_too_old_to_keep(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    """Its 2015 timestamp is older than the events' retention: taken, not stored."""
    answer = await post(client, TRACK_COMPLETE)
    assert answer["stored"] == 0
    [skipped] = answer["skipped"]
    assert skipped["index"] == 0
    assert skipped["reason"].startswith("older than retention")
    async with aioredis.from_url(redis_url) as store:
        assert await store.exists(events_key("AiUGstSDIg")) == 0


async def test_a_call_without_any_id_is_refused_naming_the_field(
    client: TestClient[Any, Any],
) -> None:
    answer = await post(client, TRACK_TYPICAL, status=422)
    assert [d["field"] for d in answer["error"]["details"]] == ["userId"]


async def test_the_batch_example_feeds_both_profiles(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    answer = await post(client, BATCH)
    # The songs were played in 2012 and 2015: older than the retention, so not kept.
    assert (answer["received"], answer["identified"], answer["stored"]) == (4, 2, 0)
    assert [skipped["index"] for skipped in answer["skipped"]] == [1, 3]
    assert await profile(client, "019mr8mf4r") == {"name": "Jake Peterson", "age": 26}
    assert await profile(client, "971mj8mk7p") == {"name": "Cindy Gonzalez", "age": 23}


async def test_a_batch_of_recent_calls_stores_every_event(client: TestClient[Any, Any]) -> None:
    batch = copy.deepcopy(BATCH)
    batch["batch"] = [recent(call) for call in batch["batch"]]
    answer = await post(client, batch)
    assert answer == {"received": 4, "identified": 2, "stored": 2, "skipped": []}
    rule = "events.within('song_played', hours=1)"
    text = "Still humming {{ events.last('song_played').props.name }}?"
    assert await variant(client, block_when(rule, text), "971mj8mk7p") == "yes"


async def test_an_array_of_calls_is_a_batch(client: TestClient[Any, Any]) -> None:
    """What a batching webhook destination posts."""
    answer = await post(client, [IDENTIFY_TYPICAL, recent(TRACK_COMPLETE)])
    assert answer == {"received": 2, "identified": 1, "stored": 1, "skipped": []}


async def test_anonymous_calls_and_unused_types_are_skipped(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    anonymous = copy.deepcopy(IDENTIFY_COMPLETE)
    del anonymous["userId"]
    calls = [
        anonymous,
        {**recent(TRACK_COMPLETE), "userId": None},
        {"type": "page", "userId": "u1", "name": "Home"},
        {"type": "group", "userId": "u1", "groupId": "8e9df332ac"},
        {"type": "alias", "userId": "u1", "previousId": "39239-239239-239239-23923"},
        {"type": "screen", "anonymousId": "a1", "name": "Settings"},
    ]
    answer = await post(client, {"batch": calls})
    assert (answer["received"], answer["identified"], answer["stored"]) == (6, 0, 0)
    assert answer["skipped"] == [
        {"index": 0, "reason": "no userId: anonymous activity is not kept"},
        {"index": 1, "reason": "no userId: anonymous activity is not kept"},
        {"index": 2, "reason": "page calls are not used"},
        {"index": 3, "reason": "group calls are not used"},
        {"index": 4, "reason": "alias calls are not used"},
        {"index": 5, "reason": "screen calls are not used"},
    ]
    async with aioredis.from_url(redis_url) as store:
        assert await store.keys("atopen:profile:*") == []
        assert await store.keys("atopen:events:*") == []


async def test_order_completed_is_a_purchase_with_its_revenue_as_amount(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    call = {
        "type": "track",
        "userId": "u1",
        "event": "Order Completed",
        "messageId": "order-50314b8e",
        "properties": {"order_id": "50314b8e9bcf000000000000", "revenue": 25.0},
    }
    assert (await post(client, call))["stored"] == 1
    rule = "events.last('purchase').props.amount == 25.0"
    assert await variant(client, block_when(rule), "u1") == "yes"
    async with aioredis.from_url(redis_url) as store:
        assert await store.hexists(purchases_key("u1"), "order-50314b8e")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"type": "track", "userId": "u2", "properties": {}}, "batch[1].event"),
        ({"type": "track", "userId": "u2", "event": "!!!"}, "batch[1].event"),
        ({"type": "track", "userId": "u2", "event": "x", "properties": []}, "batch[1].properties"),
        (
            {"type": "track", "userId": "u2", "event": "x", "timestamp": "soon"},
            "batch[1].timestamp",
        ),
        ({"type": "track", "userId": "u2", "event": "x", "messageId": 7}, "batch[1].messageId"),
        ({"type": "identify", "userId": "a@b.example", "traits": {}}, "batch[1].userId"),
        ({"type": "identify", "userId": "u2", "traits": "x"}, "batch[1].traits"),
        ({"type": "identify", "userId": "u2", "traits": {"tz": "Mars/Base"}}, "batch[1].traits.tz"),
        ({"type": "checkout", "userId": "u2"}, "batch[1].type"),
        ({"userId": "u2"}, "batch[1].type"),
        ("identify", "batch[1]"),
    ],
)
async def test_one_bad_call_refuses_the_batch_naming_it(
    client: TestClient[Any, Any], redis_url: str, call: Any, field: str
) -> None:
    answer = await post(client, {"batch": [IDENTIFY_TYPICAL, call]}, status=422)
    assert [d["field"] for d in answer["error"]["details"]] == [field]
    async with aioredis.from_url(redis_url) as store:
        assert await store.exists(profile_key("97980cfea0067"), profile_key("u2")) == 0


@pytest.mark.parametrize("body", [{"batch": []}, {"batch": {}}, [], "identify", 42])
async def test_a_body_that_is_no_call_is_refused(client: TestClient[Any, Any], body: Any) -> None:
    answer = await post(client, body, status=422)
    assert answer["error"]["details"][0]["field"] in ("batch", "body")


async def test_the_route_needs_the_api_token(client: TestClient[Any, Any]) -> None:
    response = await client.post(URL, json=IDENTIFY_TYPICAL)
    assert response.status == 401
    assert await profile(client, "97980cfea0067") is None


async def test_a_platform_needs_a_token_with_the_data_scope(
    make_client: Any, settings: Settings
) -> None:
    tokens = (
        ApiToken("cdp", "cdp-token", frozenset({Scope.DATA})),
        ApiToken("viewer", "viewer-token", frozenset({Scope.READ})),
    )
    client = await make_client(replace(settings, scoped_api_tokens=tokens))
    viewer = {"Authorization": "Bearer viewer-token"}
    response = await client.post(URL, json=IDENTIFY_TYPICAL, headers=viewer)
    assert response.status == 403
    cdp = {"Authorization": "Bearer cdp-token"}
    response = await client.post(URL, json=IDENTIFY_TYPICAL, headers=cdp)
    assert response.status == 200
    assert await profile(client, "97980cfea0067") == {
        "name": "Peter Gibbons",
        "plan": "premium",
        "logins": 5,
    }
