"""Stage 4 of an open, draw: the chosen variant's image, pre-rendered, cached, or rendered
now in the render pool, off the event loop."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial

from content_sources.lru import LRU
from renderers.plan import ImageFormat, RenderPlan
from renderers.render import render
from server import metrics
from server.blocks.selection import Choice
from server.blocks.snapshot import PreparedBlock
from server.opens.decide import MAX_REMEMBERED_CHOICES, MemoKey
from server.opens.render_cache import RenderCache, plan_key
from server.opens.render_pool import Place, RenderPool
from server.opens.shared import Decided
from server.outcomes import Outcome


class Drawer:
    def __init__(self, pool: RenderPool, cache: RenderCache) -> None:
        self._pool = pool
        self._cache = cache
        # The plans of remembered choices, with their cache keys, per format and scale.
        self._plans: LRU[tuple[MemoKey, ImageFormat, int], tuple[RenderPlan, str]] = LRU(
            MAX_REMEMBERED_CHOICES
        )

    def kept(
        self, prepared: PreparedBlock, decided: Decided, fmt: ImageFormat, dpr: int
    ) -> bytes | None:
        """What `draw` answers `cached` for a choice made from shared reads (`decided`)
        whose plan and image are both kept in memory (the hit counted); None, counting
        nothing, when `draw` would do more (a static default, a plan to make, an image to
        fetch or render).

        The render cache's keys of the choice's images by format and scale are kept with
        the choice as they are found: an open of the same choice looks its image up by
        them, not by hashing the memo key again in the plans' LRU."""
        image_keys = decided.image_keys
        key = image_keys.get((fmt, dpr))
        if key is None:
            if decided.choice.variant == "default" and prepared.default_is_static:
                return None
            planned = self._plans.get((decided.memo, fmt, dpr))
            if planned is None:
                return None
            key = image_keys[(fmt, dpr)] = planned[1]
        return self._cache.cached(key)

    async def draw(
        self,
        prepared: PreparedBlock,
        choice: Choice,
        fmt: ImageFormat,
        dpr: int,
        *,
        deadline: float | None,
        memo: MemoKey | None = None,
        place: Place | None = None,
    ) -> tuple[bytes, Outcome]:
        """The choice's image, and whether it was `static`, `cached` or `rendered`.

        `deadline` is when the open's work must end (`time.monotonic()`), None for none;
        `memo` the key of a remembered choice, whose plan is remembered too; `place` the
        open's place in the render queue, if it took one.
        """
        if choice.variant == "default" and prepared.default_is_static:
            return prepared.fallback(fmt, dpr), Outcome.STATIC
        planned = None if memo is None else self._plans.get((memo, fmt, dpr))
        if planned is None:
            now = choice.now or datetime.now(UTC)
            new_plan = prepared.plan(choice.variant, choice.layers, fmt, dpr, now)
            planned = (new_plan, plan_key(new_plan))
            if memo is not None:
                self._plans.put((memo, fmt, dpr), planned)
        plan, key = planned
        body = self._cache.cached(key)
        if body is not None:  # most opens of shared content: no coroutine, no closure
            return body, Outcome.CACHED
        rendered = False

        async def render_now() -> bytes:
            nonlocal rendered
            rendered = True
            started = time.perf_counter()
            # The renderer checks the deadline between layers (a timeout cannot stop a
            # running thread); the pool admits a render only if it should end by then.
            body = await self._pool.run(
                partial(render, plan, deadline=deadline), deadline=deadline, place=place
            )
            metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
            metrics.RENDERS.labels(prepared.block.id).inc()
            return body

        shared = choice.variant not in prepared.personal_variants
        body = await self._cache.get_or_render(
            plan, render_now, shared=shared, key=key, deadline=deadline
        )
        return body, Outcome.RENDERED if rendered else Outcome.CACHED
