"""Render once, serve many: the render cache, keyed by the resolved plan, not the URL.

Thousands of recipients resolve to the same plan (a countdown at the same second, a
default, a segment's variant, a product card), so the key is a hash of the plan's
content. Tier 1 is an in-process LRU bounded in bytes; tier 2 is Redis, shared by every
worker and machine, for plans that are the same for many recipients (a plan built from
one recipient's own data would only fill it). Concurrent identical misses render once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.deadlines import seconds_left
from content_sources.lru import LRU
from renderers.plan import RenderPlan
from server import metrics

log = logging.getLogger("atopen.cache")
KEY_PREFIX = "atopen:render:"
LOCK_PREFIX = "atopen:render-lock:"
# How long one process may hold a render for the others, and how often they look.
LOCK_MS = 500
POLL_MS = 5


def plan_key(plan: RenderPlan) -> str:
    """A digest of everything that decides the bytes (assets by digest, fonts by file)."""
    return hashlib.blake2b(repr(plan).encode(), digest_size=16).hexdigest()


class RenderCache:
    """Memory, then Redis, then one render per key however many opens wait for it."""

    def __init__(self, redis: Redis, *, memory_bytes: int, shared_ttl_s: int) -> None:
        self._redis = redis
        self._memory: LRU[str, bytes] = LRU(memory_bytes, len)
        self._ttl = shared_ttl_s
        self._in_flight: dict[str, asyncio.Future[bytes]] = {}

    def cached(self, key: str) -> bytes | None:
        """The bytes kept in this process under `key` (a `plan_key`), counted as a memory
        hit; None, counting nothing, when they are not (then `get_or_render`)."""
        body = self._memory.get(key)
        if body is not None:
            metrics.MEMORY_HITS.inc()
        return body

    async def get_or_render(
        self,
        plan: RenderPlan,
        render: Callable[[], Awaitable[bytes]],
        *,
        shared: bool,
        key: str | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """The plan's bytes from a cache, or from `render` (called once per key at a time).

        `shared` plans (the same for many recipients) also go to Redis; `key` is the
        plan's `plan_key` when the caller has it already. A memory hit never waits; what
        comes after a miss stops at `deadline` (a `time.monotonic()` instant) with
        TimeoutError.
        """
        key = key or plan_key(plan)
        body = self._memory.get(key)
        if body is not None:
            metrics.MEMORY_HITS.inc()
            return body
        metrics.MEMORY_MISSES.inc()
        async with asyncio.timeout(seconds_left(deadline)):
            return await self._fill(key, render, shared=shared)

    async def _fill(
        self, key: str, render: Callable[[], Awaitable[bytes]], *, shared: bool
    ) -> bytes:
        """What a memory miss does: wait for the same render already under way, or take
        the bytes from Redis (`shared` plans), or render; the result is kept in memory."""
        waiting = self._in_flight.get(key)
        if waiting is not None:
            metrics.CACHE.labels("single_flight", "hit").inc()
            return await asyncio.shield(waiting)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            body = await self._shared(key, render) if shared else await render()
            self._memory.put(key, body)
            future.set_result(body)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must log it
            raise
        finally:
            del self._in_flight[key]

    async def _shared(self, key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """Tier 2, with single flight across processes: one renders (holding a short
        lock in Redis), the others wait for its bytes to appear, and render themselves
        only if they do not in time."""
        body = await self._shared_get(key)
        if body is not None:
            return body
        if await self._lock(key):
            body = await render()
            await self._shared_put(key, body)  # awaited: the waiting processes poll for it
            return body
        waited = await self._wait_for(key)
        if waited is not None:
            metrics.CACHE.labels("redis", "waited").inc()
            return waited
        return await render()

    async def _lock(self, key: str) -> bool:
        try:
            return bool(await self._redis.set(LOCK_PREFIX + key, b"1", nx=True, px=LOCK_MS))
        except (RedisError, OSError):
            return True  # no store: render here, as without a lock

    async def _wait_for(self, key: str) -> bytes | None:
        for _ in range(LOCK_MS // POLL_MS):
            await asyncio.sleep(POLL_MS / 1000)
            try:
                body = await self._redis.get(KEY_PREFIX + key)
            except (RedisError, OSError):
                return None
            if isinstance(body, bytes):
                return body
        return None

    async def _shared_get(self, key: str) -> bytes | None:
        try:
            body = await self._redis.get(KEY_PREFIX + key)
        except (RedisError, OSError) as exc:
            log.warning("shared render cache unavailable: %r", exc)
            metrics.CACHE.labels("redis", "error").inc()
            return None
        metrics.CACHE.labels("redis", "hit" if body is not None else "miss").inc()
        return body if isinstance(body, bytes) else None

    async def _shared_put(self, key: str, body: bytes) -> None:
        try:
            await self._redis.set(KEY_PREFIX + key, body, ex=self._ttl)
        except (RedisError, OSError) as exc:
            log.warning("could not share a render: %r", exc)
