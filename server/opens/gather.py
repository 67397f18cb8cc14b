"""Stage 2 of an open, gather: everything the block's rules read, fetched before they run.

First the store round trip (the recipient's profile, events, segments, the block's
inventory items and the rest, in one pipelined trip), the stores near the reader (a
second trip when the first could not know where to search), and the block's live HTTP
data, which needs the recipient's context for its URLs. Then, when the decision finds
it needs more (an inventory item whose SKU a rule computed, the remote images of the
variant it picked), `more` fetches exactly that. Every wait stops at the open's deadline
with TimeoutError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from redis.asyncio import Redis

from content_sources import gather_context
from content_sources.deadlines import seconds_left
from content_sources.http_data import HttpData, SourceTrace
from content_sources.redis_batch import StoreBatcher
from content_sources.rule_context import RuleContext
from content_sources.source import OpenRequest, Source
from renderers.resources import Asset
from server.blocks.compiling import Block
from server.opens.remote_images import RemoteImageError, RemoteImages

# The share of the deadline live HTTP data may take; the rest is for rendering.
DATA_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Needs:
    """What a decision found missing that a fetch can bring: inventory items whose SKU a
    rule computed, and the remote images of the variant it would pick."""

    skus: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()


@dataclass(slots=True)
class Gathered:
    """The data one open's decision is made from."""

    request: OpenRequest
    context: RuleContext
    # Values given by the caller (a preview's), and the live data once fetched: kept
    # over a second store round trip.
    overrides: dict[str, object]
    images: dict[str, Asset | RemoteImageError] = field(default_factory=dict)
    data_trace: tuple[SourceTrace, ...] = ()
    # Whether a rule's computed SKUs were fetched: the choice then depends on more than
    # the block's own items, and is not remembered for other opens.
    computed_skus: bool = False


class Gatherer:
    def __init__(
        self,
        *,
        redis: Redis,
        batcher: StoreBatcher,
        sources: Sequence[Source],
        http_data: HttpData,
        remote_images: RemoteImages,
        deadline_ms: int,
    ) -> None:
        self._redis = redis
        self._batcher = batcher
        self._sources = tuple(sources)
        self._http_data = http_data
        self._remote_images = remote_images
        self._data_s = deadline_ms / 1000 * DATA_SHARE

    async def gather(
        self,
        request: OpenRequest,
        block: Block,
        overrides: Mapping[str, object],
        deadline: float | None,
    ) -> Gathered:
        """The store round trip, the stores near the reader, then the live data."""
        gathered = Gathered(request, RuleContext(), dict(overrides))
        gathered.context = await self._read_store(gathered, block, deadline)
        if block.data:
            until = None if deadline is None else min(deadline, time.monotonic() + self._data_s)
            fetched = await self._http_data.fetch_all(
                block.data, gathered.context, until, block=block.id
            )
            gathered.overrides["data"] = gathered.context["data"] = fetched.values
            gathered.data_trace = fetched.trace
        return gathered

    async def more(
        self, gathered: Gathered, needs: Needs, block: Block, deadline: float | None
    ) -> None:
        """Fetch what the decision found missing, into `gathered`."""
        if needs.skus:
            request = gathered.request
            gathered.request = replace(request, skus=request.skus | needs.skus)
            gathered.context = await self._read_store(gathered, block, deadline)
            gathered.computed_skus = True
        if needs.images:
            async with asyncio.timeout(seconds_left(deadline)):
                gathered.images.update(await self._remote_images.fetch_many(needs.images))

    async def _read_store(
        self, gathered: Gathered, block: Block, deadline: float | None
    ) -> RuleContext:
        context = await gather_context(
            self._batcher,
            self._sources,
            gathered.request,
            block.names,
            gathered.overrides,
            deadline,
        )
        for source in self._sources:
            if source.after_round_trip is not None and source.name in block.names:
                async with asyncio.timeout(seconds_left(deadline)):
                    await source.after_round_trip(self._redis, context)
        return context
