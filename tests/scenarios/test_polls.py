"""Polls (contract section 6): signed votes through the click route, one per recipient and
block (the latest wins, counted once), and the live tally in rules and images."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from support import AUTH, decode, put_block, signed

from content_sources.poll import BALLOT_FIELD, POLL_TTL_S, PollVotes, percentages
from content_sources.redis_keys import poll_tally_key, poll_votes_key

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "https://shop.example.com/poll/results"
DEFAULT_LINK = "https://shop.example.com/"
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def bar_block(**poll: Any) -> dict[str, Any]:
    """A 200-pixel bar filled in red to the share of `yes`; `voted` when the reader voted
    yes, `tally` for everyone else who is signed."""
    bar = [
        {
            "type": "progress",
            "box": [0, 0, 200, 20],
            "value": "{{ poll.options.yes.percent }}",
            "color": "#ff0000",
            "track": "#0000ff",
        }
    ]
    return {
        "width": 200,
        "height": 20,
        "poll": {"options": ["yes", "no", "maybe"], **poll},
        "variants": [
            {"name": "voted", "when": "poll.mine == 'yes'", "layers": bar},
            {"name": "tally", "layers": bar, "link": "https://shop.example.com/tally"},
        ],
        "default": {"layers": [{"type": "fill", "color": "#00ff00"}], "link": DEFAULT_LINK},
    }


async def vote(
    client: TestClient[Any, Any], recipient: str, option: str, block: str = "poll"
) -> str:
    response = await client.get(
        signed(f"/c/{block}?r={recipient}&vote={option}"), allow_redirects=False
    )
    assert response.status == 302
    return response.headers["Location"]


async def red_pixels(client: TestClient[Any, Any], recipient: str) -> tuple[int, str]:
    """How many pixels of the bar are red in the image `recipient` gets, and its variant."""
    response = await client.get(signed(f"/i/poll.png?r={recipient}"))
    assert response.status == 200
    image = decode(await response.read()).convert("RGB")
    assert image.size == (200, 20)
    row = [image.getpixel((x, 10)) for x in range(200)]
    assert all(pixel in (RED, BLUE) for pixel in row)
    return row.count(RED), response.headers["X-Atopen-Variant"]


async def tally(redis_url: str, block: str = "poll") -> dict[str, int]:
    async with aioredis.from_url(redis_url) as store:
        stored = await store.hgetall(poll_tally_key(block))
    # The client answers bytes: it does not decode responses. The ballot is no count.
    return {
        k.decode(): int(v)
        for k, v in cast(dict[bytes, bytes], stored).items()
        if k.decode() != BALLOT_FIELD
    }


async def test_a_signed_vote_goes_to_the_results_and_shows_in_the_image(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    assert await red_pixels(client, "u1") == (0, "tally")  # no votes: an empty bar
    assert await vote(client, "u1", "yes") == RESULTS
    assert await red_pixels(client, "u1") == (200, "voted")
    assert await vote(client, "u2", "no") == RESULTS
    assert await vote(client, "u3", "no") == RESULTS
    # yes has 1 of 3 votes: 33%, a third of the bar; u2 sees the same tally, not thanks.
    assert await red_pixels(client, "u1") == (66, "voted")
    assert await red_pixels(client, "u2") == (66, "tally")


async def test_a_vote_changed_twice_counts_once(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    for option in ("yes", "no", "yes", "yes"):
        await vote(client, "u1", option)
    assert await tally(redis_url) == {"yes": 1, "no": 0}
    assert await red_pixels(client, "u1") == (200, "voted")


async def test_votes_arriving_at_once_count_the_recipient_once(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    options = ["yes", "no", "maybe"] * 10
    await asyncio.gather(*(vote(client, "u1", option) for option in options))
    counts = await tally(redis_url)
    assert sum(counts.values()) == 1
    async with aioredis.from_url(redis_url) as store:
        stored = await store.hget(poll_votes_key("u1"), "poll")
    assert isinstance(stored, bytes)
    mine = stored.decode().rpartition(":")[2]  # stored as BALLOT:OPTION
    assert counts[mine] == 1


@pytest.mark.parametrize(
    "url",
    [
        "/c/poll?r=u1&vote=yes",  # not signed
        "/c/poll?r=u1&vote=yes&sig=not-the-signature",
        "SIGNED:/c/poll?r=u1&vote=later",  # not one of the options
        "SIGNED:/c/poll?r=u1&vote=",
        "SIGNED:/c/poll?vote=yes",  # signed, but for no recipient
    ],
)
async def test_a_vote_not_to_record_records_nothing_and_goes_to_the_default(
    client: TestClient[Any, Any], redis_url: str, url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    if url.startswith("SIGNED:"):
        url = signed(url.removeprefix("SIGNED:"))
    response = await client.get(url, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == DEFAULT_LINK
    async with aioredis.from_url(redis_url) as store:
        assert await store.keys("atopen:poll*") == []


async def test_a_vote_on_a_block_without_a_poll_records_nothing(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    block = bar_block()
    del block["poll"]
    block["variants"] = [{"name": "plain", "layers": [{"type": "fill", "color": "#ff0000"}]}]
    await put_block(client, "plain", block)
    assert await vote(client, "u1", "yes", block="plain") == DEFAULT_LINK
    async with aioredis.from_url(redis_url) as store:
        assert await store.keys("atopen:poll*") == []


async def test_without_a_results_page_a_vote_goes_where_the_click_would(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block())
    # u2 has not voted yes: the `tally` variant's link, recorded all the same.
    assert await vote(client, "u2", "no") == "https://shop.example.com/tally"
    assert await tally(redis_url) == {"no": 1}


@pytest.mark.parametrize(
    ("counts", "shares"),
    [
        ([1, 1, 1], [34, 33, 33]),
        ([2, 1], [67, 33]),
        ([1, 0, 0], [100, 0, 0]),
        ([0, 0, 0], [0, 0, 0]),
        ([1, 1, 1, 1, 1, 1, 1], [15, 15, 14, 14, 14, 14, 14]),
        ([985, 10, 5], [99, 1, 0]),  # 98.5 and 0.5 tie: the first goes up
    ],
)
def test_percentages_are_whole_and_add_up_to_100(counts: list[int], shares: list[int]) -> None:
    assert percentages(counts) == shares


@pytest.mark.parametrize("counts", [[7, 13, 29, 51], [1, 2, 3, 4, 5, 6], [333, 333, 334], [1] * 20])
def test_each_percentage_is_its_share_rounded_up_or_down(counts: list[int]) -> None:
    shares = percentages(counts)
    assert sum(shares) == 100
    for count, share in zip(counts, shares, strict=True):
        exact = Fraction(count * 100, sum(counts))
        assert exact - 1 < share < exact + 1


async def test_rules_see_total_counts_percentages_and_mine(client: TestClient[Any, Any]) -> None:
    """Each variant holds only when its rule reads the values as they are."""
    rules = [
        "poll.total == 3 and poll.options.yes.count == 1 and poll.options.no.count == 1",
        "poll.options.yes.percent == 34 and poll.options.no.percent == 33",
        "poll.options.maybe.percent == 33 and poll.mine == 'maybe'",
    ]
    block = bar_block()
    block["variants"] = [
        {
            "name": "checked",
            "when": " and ".join(rules),
            "layers": [{"type": "fill", "color": "#f00"}],
        }
    ]
    await put_block(client, "poll", block)
    for recipient, option in (("u1", "yes"), ("u2", "no"), ("u3", "maybe")):
        await vote(client, recipient, option)
    response = await client.get(signed("/i/poll.png?r=u3"))
    assert response.headers["X-Atopen-Variant"] == "checked"
    # u1 voted yes: `poll.mine == 'maybe'` is false for them.
    response = await client.get(signed("/i/poll.png?r=u1"))
    assert response.headers["X-Atopen-Variant"] == "default"


async def test_mine_is_missing_before_a_vote(client: TestClient[Any, Any]) -> None:
    block = bar_block()
    block["variants"] = [
        {
            "name": "thanks",
            "layers": [{"type": "text", "box": [0, 0, 200, 20], "text": "{{ poll.mine }}"}],
        }
    ]
    await put_block(client, "poll", block)
    response = await client.post(
        "/api/v1/blocks/poll/preview",
        json={"recipient": "u9"},
        headers={**AUTH, "Accept": "application/json"},
    )
    body = await response.json()
    assert body["variant"] == "default"
    assert body["trace"][0]["reason"] == "missing value: poll.mine is missing"


async def test_an_unsigned_open_shows_the_default_with_no_tally(
    client: TestClient[Any, Any],
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    await vote(client, "u1", "yes")
    response = await client.get("/i/poll.png?r=u1")
    assert response.headers["X-Atopen-Variant"] == "default"
    assert decode(await response.read()).convert("RGB").getpixel((100, 10)) == (0, 255, 0)


async def test_erasing_a_recipient_erases_their_vote(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    await vote(client, "u1", "yes")
    response = await client.delete("/api/v1/profiles/u1", headers=AUTH)
    assert response.status == 204
    async with aioredis.from_url(redis_url) as store:
        assert await store.exists(poll_votes_key("u1")) == 0


@pytest.mark.parametrize(
    ("poll", "field"),
    [
        ({"options": ["yes", "no", "not sure"]}, "poll.options[2]"),
        ({"options": ["yes", "no", "yes"]}, "poll.options[2]"),
        ({"options": ["yes"]}, "poll.options"),
        ({"options": "yes,no"}, "poll.options"),
        ({"options": ["yes", "no"], "results": "javascript:alert(1)"}, "poll.results"),
        ({"options": ["yes", "no"], "results": "https://user@shop.example.com/"}, "poll.results"),
        ({"options": ["yes", "no"], "colour": "red"}, "poll.colour"),
        (None, "poll"),
        ([], "poll"),
    ],
)
async def test_a_bad_poll_is_refused_naming_its_field(
    client: TestClient[Any, Any], redis_url: str, poll: Any, field: str
) -> None:
    block = bar_block()
    block["poll"] = poll
    response = await client.put("/api/v1/blocks/poll", json=block, headers=AUTH)
    assert response.status == 422
    body = await response.json()
    assert field in [detail["field"] for detail in body["error"]["details"]]
    async with aioredis.from_url(redis_url) as store:
        assert await store.hget("atopen:blocks", "poll") is None


async def test_rules_that_read_poll_need_a_poll(client: TestClient[Any, Any]) -> None:
    block = bar_block()
    del block["poll"]
    response = await client.put("/api/v1/blocks/poll", json=block, headers=AUTH)
    assert response.status == 422
    body = await response.json()
    assert [d["field"] for d in body["error"]["details"]] == ["poll"]


async def test_the_demo_poll_shows_the_live_tally(client: TestClient[Any, Any]) -> None:
    definition = json.loads((ROOT / "templates" / "blocks" / "poll.json").read_text())
    await put_block(client, "poll", definition)
    response = await client.get(signed("/i/poll.png?r=ann"))
    assert response.headers["X-Atopen-Variant"] == "tally"
    before = decode(await response.read()).convert("RGB")
    assert await vote(client, "ann", "jackets") == definition["poll"]["results"]
    response = await client.get(signed("/i/poll.png?r=ann"))
    assert response.headers["X-Atopen-Variant"] == "voted"
    after = decode(await response.read()).convert("RGB")
    assert after.size == before.size == (600, 250)
    # The jackets bar (blue, #1971c2) is full now, and was empty before.
    assert after.getpixel((480, 152)) == (0x19, 0x71, 0xC2)
    assert before.getpixel((480, 152)) != (0x19, 0x71, 0xC2)


async def test_a_public_block_still_counts_only_signed_votes(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", {**bar_block(results=RESULTS), "public": True})
    response = await client.get("/c/poll?r=u1&vote=yes", allow_redirects=False)
    assert response.headers["Location"] == DEFAULT_LINK
    assert await tally(redis_url) == {}
    assert await vote(client, "u1", "yes") == RESULTS
    assert await tally(redis_url) == {"yes": 1}


async def test_a_default_that_reads_the_tally_is_refused(client: TestClient[Any, Any]) -> None:
    """The default is what unsigned opens get, and they read no tally."""
    block = bar_block()
    block["default"]["layers"] = [
        {"type": "text", "box": [0, 0, 200, 20], "text": "{{ poll.total }} votes"}
    ]
    response = await client.put("/api/v1/blocks/poll", json=block, headers=AUTH)
    assert response.status == 422
    [detail] = (await response.json())["error"]["details"]
    assert detail["field"] == "default"
    assert "the tally is read on signed opens only" in detail["message"]


async def test_deleting_a_block_deletes_its_tally_and_a_new_block_starts_afresh(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    await vote(client, "u1", "yes")
    await vote(client, "u2", "yes")
    response = await client.delete("/api/v1/blocks/poll", headers=AUTH)
    assert response.status == 204
    async with aioredis.from_url(redis_url) as store:
        assert await store.exists(poll_tally_key("poll")) == 0
    # The same id again: an empty bar, and u1's old vote no longer counts as theirs.
    await put_block(client, "poll", bar_block(results=RESULTS))
    assert await red_pixels(client, "u1") == (0, "tally")
    # u1 changes to no: their old yes is not taken off the new tally, which holds only
    # the votes cast since.
    await vote(client, "u1", "no")
    assert await tally(redis_url) == {"no": 1}
    await vote(client, "u2", "yes")
    assert await tally(redis_url) == {"no": 1, "yes": 1}
    assert await red_pixels(client, "u2") == (100, "voted")


async def test_a_tally_left_by_a_vote_after_its_block_was_deleted_is_deleted_again(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    """A click already past the block's lookup when the block is deleted may still land."""
    await put_block(client, "poll", bar_block(results=RESULTS))
    response = await client.delete("/api/v1/blocks/poll", headers=AUTH)
    assert response.status == 204
    async with aioredis.from_url(redis_url) as store:
        await PollVotes(store).vote("poll", "u1", "yes")
        assert 0 < await store.ttl(poll_tally_key("poll")) <= POLL_TTL_S
        response = await client.delete("/api/v1/blocks/poll", headers=AUTH)
        assert response.status == 404
        assert await store.exists(poll_tally_key("poll")) == 0


async def test_votes_and_tallies_expire_a_while_after_the_last_vote(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    await put_block(client, "poll", bar_block(results=RESULTS))
    keys = (poll_votes_key("u1"), poll_tally_key("poll"))
    await vote(client, "u1", "yes")
    async with aioredis.from_url(redis_url) as store:
        for key in keys:
            assert POLL_TTL_S - 60 < await store.ttl(key) <= POLL_TTL_S
            await store.expire(key, 60)
        # A new vote renews both.
        await vote(client, "u1", "no")
        for key in keys:
            assert POLL_TTL_S - 60 < await store.ttl(key) <= POLL_TTL_S
