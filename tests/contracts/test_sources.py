"""The contract every content source passes, run over the registry (`build_sources`).

Each source declares its traits on its class; the commands it asks for are reads whose
keys follow the hash tag rules (a recipient's keys carry the recipient as their tag, so
one open's reads of them share one Redis Cluster slot); on an empty store its value is
missing, never a made-up default; and a shared source gives every reader the same
value. A source added to `build_sources` without its declarations or a probe below
fails this suite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geoip2.database
import orjson
import pytest
import redis.asyncio as aioredis
from support import LONDON_IP

from content_sources import active_sources, build_sources, gather_context
from content_sources.expressions import MissingValueError, Template
from content_sources.redis_keys import inventory_key, profile_key
from content_sources.source import OpenRequest, Reach, RedisCommand, Source
from server.settings import Settings

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SETTINGS = Settings().sources
NAMES = [source.name for source in build_sources(SETTINGS)]
# What a source declares beside its name, commands and build: the protocol's properties.
TRAITS = tuple(
    name for name, member in vars(Source).items() if isinstance(member, property) and name != "name"
)
# For each source, a template that reads what a recipient with nothing stored does not
# have: it must be missing on an empty store. None where the value comes from the
# request alone, which an empty store cannot take away.
PROBES: dict[str, str | None] = {
    "profile": "{{ profile.first_name }}",
    "now": None,  # the open's own time
    "rfm": "{{ rfm.segment }}",
    "events": "{{ events.last('cart_abandoned').props.item }}",
    "engagement": "{{ engagement.last_open }}",
    "inventory": "{{ inventory['sku-1'].stock }}",
    "last_shown": "{{ last_shown.variant }}",
    "client": None,  # the request's User-Agent
    "geo": "{{ geo.city }}",
    "stores": "{{ stores.nearest()[0].name }}",
    "params": "{{ params.coupon }}",
    "poll": "{{ poll.mine }}",
}


def undeclared(source_class: type) -> list[str]:
    """The traits a source class (or a base of it) does not declare."""
    return [
        trait
        for trait in TRAITS
        if not any(trait in vars(base) for base in source_class.__mro__ if base is not object)
    ]


@pytest.fixture
def sources(reader: geoip2.database.Reader) -> tuple[Source, ...]:
    """The registry as a server with a GeoIP database builds it."""
    return build_sources(SETTINGS, reader)


def by_name(sources: Sequence[Source], name: str) -> Source:
    (source,) = (s for s in sources if s.name == name)
    return source


def called_commands(command: RedisCommand) -> list[str]:
    """The Redis commands `command` runs: itself, or for a script, those it calls."""
    name = str(command[0]).lower()
    if name not in {"eval", "evalsha"}:
        return [name]
    assert name == "eval", "a script is sent with its text, so its reads can be read"
    called = re.findall(r"redis\.p?call\('(\w+)'", str(command[1]))
    assert called, "a script that calls nothing"
    return [name.lower() for name in called]


def request(recipient: str | None = "u1", **changes: Any) -> OpenRequest:
    values: dict[str, Any] = {
        "at": NOW,
        "block_id": "b1",
        "recipient": recipient,
        "skus": frozenset({"sku-1", "sku-2"}),
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
        "client_ip": LONDON_IP,
        "poll_options": ("yes", "no"),
    }
    values.update(changes)
    return OpenRequest(**values)


def test_a_source_without_declarations_is_refused() -> None:
    class Bare:
        name = "bare"

        def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
            return ()

        def build(
            self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
        ) -> object:
            return {}

    assert undeclared(Bare) == list(TRAITS)
    assert "bare" not in PROBES


@pytest.mark.parametrize("name", NAMES)
def test_every_source_declares_its_traits(name: str, sources: tuple[Source, ...]) -> None:
    source = by_name(sources, name)
    assert undeclared(type(source)) == []
    assert name in PROBES, "a new source needs a probe of what it leaves missing"
    assert isinstance(source.reach, Reach)
    for flag in (source.always_build, source.shared_reads, source.reads_address):
        assert isinstance(flag, bool)
    # What it is built from exists and is built before it.
    order = [s.name for s in sources]
    assert source.depends_on <= set(order[: order.index(name)])
    # Only a shared source's value can key a choice made for many opens.
    assert (source.memo_part is not None) == (source.reach is Reach.SHARED)


@pytest.mark.parametrize("name", NAMES)
async def test_every_source_reads_only_and_keeps_a_recipients_keys_in_their_slot(
    name: str, sources: tuple[Source, ...], redis_url: str
) -> None:
    source = by_name(sources, name)
    mine, theirs = source.commands(request("u1")), source.commands(request("u2"))
    if source.shared_reads:
        assert mine == theirs  # the same reads for every recipient: shareable replies
    async with aioredis.from_url(redis_url) as store:
        described = await store.command()
        for command in mine:
            for called in called_commands(command):
                assert "readonly" in described[called]["flags"], (called, command)
            for raw in await store.command_getkeys(*command):
                key = raw if isinstance(raw, str) else raw.decode()
                assert "u2" not in key
                if "u1" in key or source.reach is Reach.PERSONAL:
                    assert key.endswith("{u1}"), key


@pytest.mark.parametrize("name", NAMES)
async def test_every_source_leaves_what_is_not_stored_missing(
    name: str, sources: tuple[Source, ...], redis_url: str
) -> None:
    probe = PROBES[name]
    async with aioredis.from_url(redis_url) as store:
        # No address either: nothing but the store could say where the reader is.
        nothing = request(client_ip=None)
        context = await gather_context(store, sources, nothing, frozenset({name}))
    if probe is None:
        assert context[name] is not None
        return
    with pytest.raises(MissingValueError):
        Template(probe).render(context)


async def test_shared_sources_give_every_reader_the_same_value(
    sources: tuple[Source, ...], redis_url: str, store: Any
) -> None:
    # Two recipients with profiles of their own, and a stocked item.
    store.set(profile_key("u1"), orjson.dumps({"first_name": "Ann"}))
    store.set(profile_key("u2"), orjson.dumps({"first_name": "Bo"}))
    store.set(inventory_key("sku-1"), orjson.dumps({"stock": 3}))
    every = frozenset(NAMES)
    async with aioredis.from_url(redis_url) as store:
        ann = await gather_context(store, sources, request("u1"), every)
        bo = await gather_context(store, sources, request("u2"), every)
    shared = [s for s in active_sources(sources, every) if s.reach is Reach.SHARED]
    assert {s.name for s in shared} >= {"inventory"}
    for source in shared:
        # Equal as a choice made from them sees them (a view compares by what it holds).
        assert source.memo_part is not None
        assert source.memo_part(ann[source.name]) == source.memo_part(bo[source.name])
    assert Template("{{ inventory['sku-1'].stock }}").render(ann) == "3"
    assert Template("{{ inventory['sku-1'].stock }}").render(bo) == "3"
    # While what is personal is each reader's own.
    assert ann["profile"] != bo["profile"]


def test_the_names_rules_can_see_are_the_documented_ones() -> None:
    # docs/rules-and-data.md, "What rules can see": one row per source, by its name.
    page = Path(__file__).resolve().parents[2] / "docs" / "rules-and-data.md"
    section = page.read_text(encoding="utf-8").split("## What rules can see", 1)[1]
    table = section.split("\n\n", 2)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)
    # `data` is the block's own live HTTP sources, fetched per block beside the registry.
    assert sorted(documented) == sorted([*NAMES, "data"])
