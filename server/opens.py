"""One email open, from a verified request to the image bytes or the click's target.

Resolve, then render: all store access happens first, in one round trip (two when a
rule computes an inventory SKU), under the render deadline; then the plan is rendered
off the event loop. Any failure on the way serves the block's pre-rendered default:
an image request never gets anything but an image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

from redis.asyncio import Redis

from content_sources import anonymous_context, gather_context
from content_sources.base import OpenRequest, Source
from content_sources.geo import remember_commands
from content_sources.http_data import HttpData, SourceTrace
from content_sources.inventory import InventoryView
from content_sources.keys import remembered_key
from content_sources.remembered import decode_memory
from content_sources.store_batch import StoreBatcher
from content_sources.stores import complete_stores
from renderers.fields import Resources
from renderers.layers.countdown import CountdownLayer
from renderers.plan import ImageFormat, RenderPlan
from renderers.render import render
from server import metrics
from server.block_store import PreparedBlock
from server.blocks import Block
from server.deadlines import seconds_left
from server.experiments import Assignment, assign
from server.loop_lag import LoopLag
from server.lru import LRU
from server.open_log import OpenLog
from server.remote_images import RemoteImages, choose_with_remote_images
from server.render_cache import RenderCache, plan_key
from server.render_pool import OverloadedError, Place, RenderPool
from server.selection import Choice, choose_variant, safe_link
from server.signing import Signer

log = logging.getLogger("atopen.opens")

MAX_RECIPIENT_LEN = 256
# The variant that replaces a countdown's once its time is up (if the block has one).
EXPIRED = "expired"
# The share of the deadline live HTTP data may take; the rest is for rendering.
DATA_SHARE = 0.6
# Choices remembered for blocks whose choice depends only on shared data.
MAX_REMEMBERED_CHOICES = 4096
# What the open leaves of its deadline for writing the answer, which under three times
# capacity took 15-70 ms (a busy event loop's turns); at most a fifth of a short one.
ANSWER_MARGIN_S = 0.1
MERGE_PREFIX = "m."


@dataclass(slots=True)
class OpenQuery:
    """The email-facing URL's parameters, parsed leniently: a bad value is ignored.
    Read-only, but not frozen: one is made per open (see `OpenRequest`)."""

    recipient: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    tz: str | None = None
    dpr: int = 1

    @staticmethod
    def parse(pairs: Sequence[tuple[str, str]]) -> OpenQuery:
        params: dict[str, str] = {}
        recipient = tz = None
        dpr = 1
        for key, value in pairs:
            if key == "r" and 0 < len(value) <= MAX_RECIPIENT_LEN:
                recipient = value
            elif key == "tz" and value:
                tz = value
            elif key == "dpr" and value in ("1", "2", "3"):
                dpr = int(value)
            elif key.startswith(MERGE_PREFIX) and len(key) > len(MERGE_PREFIX):
                params[key[len(MERGE_PREFIX) :]] = value
        return OpenQuery(recipient, params, tz, dpr)


@dataclass(slots=True)
class ImageAnswer:
    body: bytes
    variant: str
    outcome: str  # rendered | static | fallback:<reason>


class Opens:
    """Answers image opens, clicks and previews for the blocks in the snapshot."""

    def __init__(
        self,
        *,
        redis: Redis,
        signer: Signer,
        sources: Sequence[Source],
        resources: Resources,
        pool: RenderPool,
        cache: RenderCache,
        http_data: HttpData,
        remote_images: RemoteImages,
        open_log: OpenLog,
        loop_lag: LoopLag,
        deadline_ms: int,
        click_memory_s: int,
        last_seen_s: int,
        inventory_max_age_ms: int,
    ) -> None:
        self._redis = redis
        self._batcher = StoreBatcher(redis, shared_max_age_s=inventory_max_age_ms / 1000)
        self._signer = signer
        self._sources = tuple(sources)
        self._resources = resources
        self._pool = pool
        self._http_data = http_data
        self._remote_images = remote_images
        self._cache = cache
        self._open_log = open_log
        self._loop_lag = loop_lag
        self._deadline_s = deadline_ms / 1000
        self._work_s = self._deadline_s - min(ANSWER_MARGIN_S, self._deadline_s / 5)
        self._click_memory_s = click_memory_s
        self._last_seen_s = last_seen_s
        self._choices: LRU[tuple[object, ...], Choice] = LRU(MAX_REMEMBERED_CHOICES)
        # The plans of remembered choices, with their cache keys, per format and scale.
        self._plans: LRU[tuple[object, ...], tuple[RenderPlan, str]] = LRU(MAX_REMEMBERED_CHOICES)

    async def connect(self) -> None:
        """Open the opens' own store connection; StoreConnectionError if unreachable."""
        await self._batcher.connect()

    def close(self) -> None:
        """Close the opens' own store connection (the shared client is the caller's)."""
        self._batcher.close()

    def inventory_changed(self) -> None:
        """This process changed the inventory: the next opens read it afresh."""
        self._batcher.forget_shared()

    def verified(
        self, prepared: PreparedBlock, path: str, raw_query: str, pairs: Sequence[tuple[str, str]]
    ) -> bool:
        return prepared.block.public or self._signer.verify_request(path, raw_query, pairs)

    async def image(
        self,
        prepared: PreparedBlock,
        fmt: ImageFormat,
        query: OpenQuery,
        *,
        verified: bool,
        user_agent: str | None,
        client_ip: str | None = None,
    ) -> ImageAnswer:
        """The image for this open; the pre-rendered default on any failure or overrun."""
        # Work stops a little before the deadline, so that even the fallback answer is
        # written within it; the time the open already waited for the loop counts too.
        now = time.monotonic()
        deadline = now + self._work_s - self._loop_lag.seconds
        if deadline <= now:
            return self._fallback(prepared, fmt, query.dpr, "overloaded")
        place = None
        if prepared.personal_variants and verified:
            # A block drawn per recipient renders at most opens: its place in the render
            # queue is taken first, so that nothing is looked up only to be thrown away.
            try:
                place = self._pool.admit(deadline)
            except OverloadedError:
                return self._fallback(prepared, fmt, query.dpr, "overloaded")
        request = self._request(prepared, query, verified, user_agent, client_ip)
        # Each wait below is bounded by `deadline` where it happens; an open answered from
        # the render cache waits only for its store round trip.
        try:
            choice, context, memo = await self._choose(
                prepared, request, anonymous=not verified, deadline=deadline
            )
            body, outcome = await self._render(
                prepared, choice, fmt, query.dpr, deadline=deadline, memo=memo, place=place
            )
        except TimeoutError:
            return self._fallback(prepared, fmt, query.dpr, "deadline")
        except OverloadedError:
            return self._fallback(prepared, fmt, query.dpr, "overloaded")
        except Exception as exc:  # never an error image: log, then serve the default
            log.warning("open of %s fell back to the default: %r", prepared.block.id, exc)
            return self._fallback(prepared, fmt, query.dpr, "error")
        finally:
            if place is not None:
                place.release()  # unused: the image came from a cache
        link = safe_link(prepared.block, choice.link) or prepared.default_link
        seen = remember_commands(request.recipient, context, self._last_seen_s)
        self._open_log.record(prepared.block.id, request.recipient, choice.variant, link, seen)
        return ImageAnswer(body, choice.variant, outcome)

    async def click(
        self,
        prepared: PreparedBlock,
        query: OpenQuery,
        *,
        verified: bool,
        user_agent: str | None,
        client_ip: str | None = None,
    ) -> str:
        """Where a click goes: the remembered render's link, else what would render now."""
        if not verified:
            return prepared.default_link
        request = self._request(prepared, query, verified, user_agent, client_ip)
        try:
            async with asyncio.timeout(self._deadline_s):
                link = None
                if request.recipient is not None:
                    link = await self._recall_link(prepared.block.id, request.recipient, request)
                if link is None:
                    until = time.monotonic() + self._deadline_s
                    choice, _, _ = await self._choose(
                        prepared, request, anonymous=False, deadline=until
                    )
                    link = choice.link
        except Exception as exc:
            log.warning("click on %s fell back to the default link: %r", prepared.block.id, exc)
            return prepared.default_link
        return safe_link(prepared.block, link) or prepared.default_link

    async def decide(
        self, prepared: PreparedBlock, request: OpenRequest, overrides: Mapping[str, object]
    ) -> Choice:
        """The variant `request` would get (for previews: no deadline, nothing remembered)."""
        choice, _, _ = await self._choose(prepared, request, anonymous=False, overrides=overrides)
        return choice

    async def render_choice(
        self, prepared: PreparedBlock, choice: Choice, fmt: ImageFormat, dpr: int
    ) -> bytes:
        body, _ = await self._render(prepared, choice, fmt, dpr, deadline=None)
        return body

    def link_of(self, prepared: PreparedBlock, choice: Choice) -> str:
        return safe_link(prepared.block, choice.link) or prepared.default_link

    def _request(
        self,
        prepared: PreparedBlock,
        query: OpenQuery,
        verified: bool,
        user_agent: str | None,
        client_ip: str | None,
    ) -> OpenRequest:
        at = datetime.now(UTC)
        if not verified:
            return OpenRequest(at=at, block_tz=prepared.block.tz, user_agent=user_agent)
        return OpenRequest(
            at=at,
            block_id=prepared.block.id,
            recipient=query.recipient,
            params=query.params,
            tz=query.tz,
            block_tz=prepared.block.tz,
            user_agent=user_agent,
            client_ip=client_ip,
            skus=prepared.block.skus,
        )

    async def _choose(
        self,
        prepared: PreparedBlock,
        request: OpenRequest,
        *,
        anonymous: bool,
        overrides: Mapping[str, object] | None = None,
        deadline: float | None = None,
    ) -> tuple[Choice, dict[str, object], tuple[object, ...] | None]:
        """The variant for this open, the context it was chosen in, and the key it is
        remembered by when it holds for every open with the same shared data.

        Every wait stops at `deadline` (a `time.monotonic()` instant) with TimeoutError.
        """
        block = prepared.block
        if anonymous:
            context = anonymous_context(self._sources, request)
            choice = choose_variant(
                block, context, self._resources, default_only=True, default_reason="unsigned"
            )
            return choice, context, None
        assignment = assign(block.split, block.id, request.recipient)
        overrides = dict(overrides or {})
        context = await self._gather(request, block, overrides, deadline)
        trace: tuple[SourceTrace, ...] = ()
        if block.data:
            # Live HTTP data needs the recipient's context for its URLs, so it comes
            # second, with part of the deadline: the rest is for rendering.
            until = None if deadline is None else time.monotonic() + self._deadline_s * DATA_SHARE
            fetched = await self._http_data.fetch_all(block.data, context, until)
            overrides["data"] = fetched.values
            context["data"] = fetched.values
            trace = fetched.trace
        memo = None if overrides else self._memo_key(prepared, context)
        if memo is not None and (remembered := self._choices.get(memo)) is not None:
            return remembered, context, memo
        choice = await self._select(block, context, assignment, deadline)
        inventory = context.get("inventory")
        if isinstance(inventory, InventoryView) and inventory.unfetched:
            # A rule computed a SKU: fetch it and decide again (at most once more).
            request = replace(request, skus=request.skus | inventory.unfetched)
            context = await self._gather(request, block, overrides, deadline)
            choice = await self._select(block, context, assignment, deadline)
            memo = None
        elif memo is not None:
            self._choices.put(memo, choice)
        return (replace(choice, data_trace=trace) if trace else choice), context, memo

    def _memo_key(
        self, prepared: PreparedBlock, context: Mapping[str, object]
    ) -> tuple[object, ...] | None:
        """For a block whose choice depends only on shared data (live stock, the client,
        the second), the data it depends on: equal keys make equal choices, so thousands
        of recipients share one evaluation of the rules. None for any other block."""
        if not prepared.choice_is_shared:
            return None
        inventory = context.get("inventory")
        now = context.get("now")
        client = context.get("client")
        return (
            prepared.block.id,
            prepared.block.version,
            inventory.fingerprint() if isinstance(inventory, InventoryView) else None,
            now.isoformat(timespec="seconds") if isinstance(now, datetime) else None,
            tuple(sorted(client.items())) if isinstance(client, dict) else None,
        )

    async def _gather(
        self,
        request: OpenRequest,
        block: Block,
        overrides: Mapping[str, object],
        deadline: float | None,
    ) -> dict[str, object]:
        """The store round trip, the caller's overrides, then the stores near the reader
        (a second step when the first could not know where to search)."""
        context = await gather_context(
            self._batcher, self._sources, request, block.names, overrides, deadline
        )
        if "stores" in block.names:
            async with asyncio.timeout(seconds_left(deadline)):
                await complete_stores(self._redis, context)
        return context

    async def _select(
        self,
        block: Block,
        context: Mapping[str, object],
        assignment: Assignment,
        deadline: float | None,
    ) -> Choice:
        """The variant for this context, with the remote images it shows fetched."""
        now = context.get("now")
        now = now if isinstance(now, datetime) else datetime.now(UTC)
        shown = context.get("last_shown")
        keep = shown.get("variant") if block.sticky and isinstance(shown, dict) else None
        holdout = assignment.holdout
        # `expired` is never chosen in order: it replaces a countdown whose time is up.
        excluded = assignment.excluded | {EXPIRED}

        def choose(resources: Resources) -> Choice:
            choice = choose_variant(
                block,
                context,
                resources,
                default_only=holdout,
                excluded=excluded,
                keep=keep if isinstance(keep, str) and keep not in excluded else None,
                default_reason="experiment holdout" if holdout else "no other variant applied",
            )
            if _timer_is_up(choice, now) and any(v.name == EXPIRED for v in block.variants):
                expired = choose_variant(block, context, resources, keep=EXPIRED, excluded=excluded)
                if expired.variant == EXPIRED:
                    return expired
            return choice

        choice = await choose_with_remote_images(
            choose, self._resources, self._remote_images, deadline
        )
        return replace(choice, now=now)

    async def _render(
        self,
        prepared: PreparedBlock,
        choice: Choice,
        fmt: ImageFormat,
        dpr: int,
        *,
        deadline: float | None,
        memo: tuple[object, ...] | None = None,
        place: Place | None = None,
    ) -> tuple[bytes, str]:
        """The choice's image: pre-rendered, cached, or rendered now in the pool.

        `deadline` is when the open must be answered (`time.monotonic()`), None for none;
        `memo` the key of a remembered choice, whose plan is remembered too; `place` the
        open's place in the render queue, if it took one.
        """
        if choice.variant == "default" and prepared.default_is_static:
            return prepared.fallback(fmt, dpr), "static"
        block = prepared.block
        planned = None if memo is None else self._plans.get((memo, fmt, dpr))
        if planned is None:
            new_plan = prepared.plan(
                choice.variant, choice.layers, fmt, dpr, choice.now or _utc_now()
            )
            planned = (new_plan, plan_key(new_plan))
            if memo is not None:
                self._plans.put((memo, fmt, dpr), planned)
        plan, key = planned
        # The renderer checks the deadline between layers (a timeout cannot stop a running
        # thread); the pool admits a render only if it should end by then.
        rendered = False

        async def render_now() -> bytes:
            nonlocal rendered
            rendered = True
            started = time.perf_counter()
            body = await self._pool.run(
                partial(render, plan, deadline=deadline), deadline=deadline, place=place
            )
            metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
            metrics.RENDERS.labels(block.id).inc()
            return body

        shared = choice.variant not in prepared.personal_variants
        body = await self._cache.get_or_render(
            plan, render_now, shared=shared, key=key, deadline=deadline
        )
        return body, "rendered" if rendered else "cached"

    def _fallback(
        self, prepared: PreparedBlock, fmt: ImageFormat, dpr: int, reason: metrics.FallbackReason
    ) -> ImageAnswer:
        metrics.FALLBACKS[reason].inc()
        return ImageAnswer(prepared.fallback(fmt, dpr), "default", f"fallback:{reason}")

    async def _recall_link(self, block_id: str, recipient: str, request: OpenRequest) -> str | None:
        raw = await self._redis.hget(remembered_key(recipient), block_id)
        entry = decode_memory(raw, request.at, self._click_memory_s)
        return str(entry["link"]) if entry is not None else None


def _timer_is_up(choice: Choice, now: datetime) -> bool:
    return any(
        isinstance(layer, CountdownLayer) and layer.deadline(now) <= now for layer in choice.layers
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)
