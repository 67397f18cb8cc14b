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
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

import orjson
from redis.asyncio import Redis

from content_sources import anonymous_context, gather_context
from content_sources.base import OpenRequest, Source
from content_sources.inventory import InventoryView
from content_sources.keys import remembered_key
from renderers.fields import Resources
from renderers.plan import ImageFormat, RenderPlan
from renderers.render import render
from server.block_store import PreparedBlock
from server.selection import Choice, choose_variant, safe_link
from server.signing import Signer

log = logging.getLogger("atopen.opens")

MAX_RECIPIENT_LEN = 256
MERGE_PREFIX = "m."


@dataclass(frozen=True, slots=True)
class OpenQuery:
    """The email-facing URL's parameters, parsed leniently: a bad value is ignored."""

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


@dataclass(frozen=True, slots=True)
class ImageAnswer:
    body: bytes
    variant: str
    outcome: str  # rendered | static | fallback:<reason>


@dataclass(frozen=True, slots=True)
class Remembered:
    variant: str
    link: str


class Opens:
    """Answers image opens, clicks and previews for the blocks in the snapshot."""

    def __init__(
        self,
        *,
        redis: Redis,
        signer: Signer,
        sources: Sequence[Source],
        resources: Resources,
        executor: Executor,
        deadline_ms: int,
        click_memory_s: int,
    ) -> None:
        self._redis = redis
        self._signer = signer
        self._sources = sources
        self._resources = resources
        self._executor = executor
        self._deadline_s = deadline_ms / 1000
        self._click_memory_s = click_memory_s
        self._background: set[asyncio.Task[None]] = set()

    def verified(
        self, prepared: PreparedBlock, path: str, pairs: Sequence[tuple[str, str]]
    ) -> bool:
        return prepared.block.public or self._signer.verify(path, pairs)

    async def image(
        self,
        prepared: PreparedBlock,
        fmt: ImageFormat,
        query: OpenQuery,
        *,
        verified: bool,
        user_agent: str | None,
    ) -> ImageAnswer:
        """The image for this open; the pre-rendered default on any failure or overrun."""
        request = self._request(prepared, query, verified, user_agent)
        try:
            async with asyncio.timeout(self._deadline_s):
                choice = await self._choose(prepared, request, anonymous=not verified)
                body, outcome = await self._render(prepared, choice, fmt, query.dpr)
        except TimeoutError:
            return self._fallback(prepared, fmt, query.dpr, "deadline")
        except Exception as exc:  # never an error image: log, then serve the default
            log.warning("open of %s fell back to the default: %r", prepared.block.id, exc)
            return self._fallback(prepared, fmt, query.dpr, type(exc).__name__)
        if request.recipient is not None:
            self._remember(prepared, request.recipient, choice)
        return ImageAnswer(body, choice.variant, outcome)

    async def click(
        self, prepared: PreparedBlock, query: OpenQuery, *, verified: bool, user_agent: str | None
    ) -> str:
        """Where a click goes: the remembered render's link, else what would render now."""
        if not verified:
            return prepared.default_link
        request = self._request(prepared, query, verified, user_agent)
        try:
            async with asyncio.timeout(self._deadline_s):
                link = None
                if request.recipient is not None:
                    remembered = await self._recall(prepared.block.id, request.recipient)
                    link = remembered.link if remembered is not None else None
                if link is None:
                    link = (await self._choose(prepared, request, anonymous=False)).link
        except Exception as exc:
            log.warning("click on %s fell back to the default link: %r", prepared.block.id, exc)
            return prepared.default_link
        return safe_link(prepared.block, link) or prepared.default_link

    async def decide(
        self, prepared: PreparedBlock, request: OpenRequest, client: Mapping[str, object] | None
    ) -> Choice:
        """The variant `request` would get (for previews: no deadline, nothing remembered)."""
        return await self._choose(prepared, request, anonymous=False, client=client)

    async def render_choice(
        self, prepared: PreparedBlock, choice: Choice, fmt: ImageFormat, dpr: int
    ) -> bytes:
        body, _ = await self._render(prepared, choice, fmt, dpr, bounded=False)
        return body

    def link_of(self, prepared: PreparedBlock, choice: Choice) -> str:
        return safe_link(prepared.block, choice.link) or prepared.default_link

    def _request(
        self, prepared: PreparedBlock, query: OpenQuery, verified: bool, user_agent: str | None
    ) -> OpenRequest:
        at = datetime.now(UTC)
        if not verified:
            return OpenRequest(at=at, block_tz=prepared.block.tz, user_agent=user_agent)
        return OpenRequest(
            at=at,
            recipient=query.recipient,
            params=query.params,
            tz=query.tz,
            block_tz=prepared.block.tz,
            user_agent=user_agent,
            skus=prepared.block.skus,
        )

    async def _choose(
        self,
        prepared: PreparedBlock,
        request: OpenRequest,
        *,
        anonymous: bool,
        client: Mapping[str, object] | None = None,
    ) -> Choice:
        block = prepared.block
        if anonymous:
            context = anonymous_context(self._sources, request)
            return choose_variant(block, context, self._resources, default_only=True)
        context = await gather_context(self._redis, self._sources, request, block.names)
        if client is not None:
            context["client"] = dict(client)
        choice = choose_variant(block, context, self._resources)
        inventory = context.get("inventory")
        if isinstance(inventory, InventoryView) and inventory.unfetched:
            # A rule computed a SKU: fetch it and decide again (at most once more).
            request = replace(request, skus=request.skus | inventory.unfetched)
            context = await gather_context(self._redis, self._sources, request, block.names)
            if client is not None:
                context["client"] = dict(client)
            choice = choose_variant(block, context, self._resources)
        return choice

    async def _render(
        self,
        prepared: PreparedBlock,
        choice: Choice,
        fmt: ImageFormat,
        dpr: int,
        *,
        bounded: bool = True,
    ) -> tuple[bytes, str]:
        if choice.variant == "default" and prepared.default_is_static:
            return prepared.fallback(fmt, dpr), "static"
        block = prepared.block
        plan = RenderPlan(block.width, block.height, dpr, fmt, choice.layers)
        # The renderer checks this between layers: a timeout cannot stop a running thread.
        until = time.monotonic() + self._deadline_s if bounded else None
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._executor, partial(render, plan, deadline=until))
        return body, "rendered"

    def _fallback(
        self, prepared: PreparedBlock, fmt: ImageFormat, dpr: int, reason: str
    ) -> ImageAnswer:
        return ImageAnswer(prepared.fallback(fmt, dpr), "default", f"fallback:{reason}")

    def _remember(self, prepared: PreparedBlock, recipient: str, choice: Choice) -> None:
        """Note what was shown, for the click, off the response path."""
        link = safe_link(prepared.block, choice.link) or prepared.default_link
        entry = orjson.dumps({"variant": choice.variant, "link": link, "at": time.time()})
        task = asyncio.create_task(self._store_memory(prepared.block.id, recipient, entry))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_memory(self, block_id: str, recipient: str, entry: bytes) -> None:
        key = remembered_key(recipient)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, block_id, entry)
                pipe.expire(key, self._click_memory_s)
                await pipe.execute()
        except Exception as exc:
            log.warning("could not remember the render of %s: %r", block_id, exc)

    async def _recall(self, block_id: str, recipient: str) -> Remembered | None:
        raw = await self._redis.hget(remembered_key(recipient), block_id)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
            if time.time() - float(entry["at"]) > self._click_memory_s:
                return None
            return Remembered(str(entry["variant"]), str(entry["link"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    async def drain(self) -> None:
        """Let the pending background writes finish (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
