"""Content sources: the names rules and templates can read, and how one open gathers them.

Adding a source is one module with a class like those below and one line in
`build_sources`; it must pass `tests/contracts/test_sources.py`, the suite every source passes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from geoip2.database import Reader
from redis.asyncio import Redis

from content_sources.client import ClientSource
from content_sources.clock import ClockSource
from content_sources.engagement import EngagementSource
from content_sources.events import EventsSource
from content_sources.geo import GeoSource
from content_sources.inventory import InventorySource
from content_sources.params import ParamsSource
from content_sources.poll import PollSource
from content_sources.profile import ProfileSource
from content_sources.redis_batch import StoreBatcher, execute_raw
from content_sources.remembered import LastShownSource
from content_sources.rule_context import RuleContext
from content_sources.segments import SegmentsSource
from content_sources.shops import ShopsSource
from content_sources.source import OpenRequest, Reach, Source
from content_sources.store_timing import round_trip_took


@lru_cache(maxsize=1024)
def active_sources(sources: tuple[Source, ...], names: frozenset[str]) -> tuple[Source, ...]:
    """The sources an open that reads `names` builds, in order: those names, what they
    are built from (each source's `depends_on`), and the sources that are always built."""
    depends = {s.name: s.depends_on for s in sources}
    needed = set(names) | {s.name for s in sources if s.always_build}
    pending = list(needed)
    while pending:
        for dependency in depends.get(pending.pop(), ()):
            if dependency not in needed:
                needed.add(dependency)
                pending.append(dependency)
    return tuple(s for s in sources if s.name in needed)


def names_of(sources: Sequence[Source], reach: Reach) -> frozenset[str]:
    """The names of the sources whose values have this reach."""
    return frozenset(s.name for s in sources if s.reach is reach)


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """What the operator sets for the sources (the server's settings carry the values)."""

    events_max_per_recipient: int
    click_memory_days: int
    stores_max_km: int


def build_sources(settings: SourceSettings, geoip: Reader | None = None) -> tuple[Source, ...]:
    """Every source, in the order they are built (later ones may read earlier ones)."""
    geo = GeoSource(geoip)
    return (
        ProfileSource(),
        ClockSource(),
        SegmentsSource(),
        EventsSource(settings.events_max_per_recipient),
        EngagementSource(),
        InventorySource(),
        LastShownSource(settings.click_memory_days * 86_400),
        ClientSource(),
        geo,
        ShopsSource(geo, settings.stores_max_km),
        ParamsSource(),
        PollSource(),
    )


async def gather_context(
    store: Redis | StoreBatcher,
    sources: Sequence[Source],
    request: OpenRequest,
    names: frozenset[str],
    overrides: Mapping[str, object] | None = None,
    deadline: float | None = None,
) -> RuleContext:
    """The rule context for one open: one store round trip, then each source's value.

    `overrides` replace sources' values (a preview "as a Gmail open, in Lisbon"); the
    sources built after them see the replacements. `deadline` (a `time.monotonic()`
    instant) bounds the round trip: TimeoutError after it.
    """
    active = active_sources(tuple(sources), names)
    commands = [s.commands(request) for s in active]
    flat = [command for batch in commands for command in batch]
    replies: list[object] = []
    if isinstance(store, StoreBatcher):
        if flat:
            # Reads every open makes alike may be answered from the batcher's recent ones.
            shared = all(
                source.shared_reads for source, batch in zip(active, commands, strict=True) if batch
            )
            kept = store.kept(flat) if shared else None
            # Timed per round trip by the batcher.
            replies = (
                kept if kept is not None else await store.execute(flat, deadline, shared=shared)
            )
    elif flat:
        started = time.perf_counter()
        replies = await execute_raw(store, flat, deadline=deadline)
        round_trip_took(time.perf_counter() - started)
    return build_context(active, commands, replies, request, overrides)


def anonymous_context(sources: Sequence[Source], request: OpenRequest) -> RuleContext:
    """The context of an open with no recipient data at all (no store access needed)."""
    empty = OpenRequest(at=request.at, block_tz=request.block_tz, user_agent=request.user_agent)
    return build_context(sources, [() for _ in sources], [], empty)


def build_context(
    sources: Sequence[Source],
    commands: Sequence[Sequence[object]],
    replies: Sequence[object],
    request: OpenRequest,
    overrides: Mapping[str, object] | None = None,
) -> RuleContext:
    context = RuleContext(overrides or {})
    offset = 0
    for source, batch in zip(sources, commands, strict=True):
        if source.name not in context:
            context[source.name] = source.build(
                request, replies[offset : offset + len(batch)], context
            )
        offset += len(batch)
    return context
