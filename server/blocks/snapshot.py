"""Blocks in Redis, and every process's in-memory snapshot of them.

The image path never reads a block from the store: each process keeps a snapshot,
loaded at startup and refreshed by pub/sub (with a periodic full resync in case a
message was missed while disconnected). A block is prepared when it enters the
snapshot: compiled, its default resolved with no data, and the default pre-rendered in
every format and scale, so serving a fallback needs no store and no CPU.

What a put or delete answered, the next open sees on every process. Each change to any
block takes the next number of one store-wide counter, written and published by one
script; every process says in the store which change its snapshot holds, and keeps a
heartbeat there. A put or delete answers once every process with a fresh heartbeat holds
its change, or after `ACK_TIMEOUT_S`, naming in the log the processes that did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from content_sources import active_sources, anonymous_context, names_of
from content_sources.clock import zone
from content_sources.poll import delete_tally
from content_sources.source import OpenRequest, Reach, Source
from renderers.encode import ByteBudgetError
from renderers.fields import Resources
from renderers.layers import needs_clock
from renderers.plan import DPRS, FORMATS, ImageFormat, Layer, RenderPlan
from renderers.render import render
from server.blocks.compiling import Block, BlockError, Problem, compile_block
from server.blocks.layer_order import LayerOrder, layer_order
from server.blocks.selection import DefaultUnavailableError, choose_variant, safe_link
from server.datastore.worker_presence import WorkerPresence

log = logging.getLogger("atopen.blocks")

BLOCKS_KEY = "atopen:blocks"
VERSIONS_KEY = "atopen:block-versions"
CHANNEL = "atopen:blocks:changed"
# These keys take BLOCKS_KEY as their hash tag, so on Redis Cluster they share its slot:
# one script writes a block with its change number, one transaction reads every block
# with the number they are at, one script reads the heartbeats with the acknowledgements.
CHANGES_KEY = "{atopen:blocks}:changes"  # the number of the last change to any block
RESYNC_INTERVAL_S = 30.0
SUBSCRIBE_TIMEOUT_S = 2.0

# KEYS: blocks, changes; ARGV: block id, record, channel. Numbering and publishing in the
# script that writes keeps the numbers in the order subscribers receive the changes.
_STORE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local change = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], change .. ' ' .. ARGV[1])
return change
"""
# KEYS: blocks, changes; ARGV: block id, channel.
_REMOVE = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
local change = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], change .. ' ' .. ARGV[1])
return {removed, change}
"""


@dataclass(frozen=True, slots=True)
class PreparedBlock:
    """A compiled block plus what serving its default needs, computed once."""

    block: Block
    default_link: str
    fallbacks: Mapping[tuple[ImageFormat, int], bytes]
    updated_at: str
    # Variants drawn from one recipient's own data: worth keeping in this process (a
    # re-fetch storm repeats them) but not in the shared cache, which they would only fill.
    personal_variants: frozenset[str]
    # A default without templates or a clock looks the same for everyone: the pre-render.
    default_is_static: bool
    # Per variant: the order its layers are drawn in, the same at every open first.
    layer_orders: Mapping[str, LayerOrder]
    # The choice depends only on data shared by all recipients (stock, the client, the
    # second), never on one recipient's: it can be evaluated once for many opens.
    choice_is_shared: bool
    # An open looks at the reader's address (for its location): working the address out
    # of proxy headers is skipped for the other blocks.
    reads_address: bool

    def plan(
        self, variant: str, layers: tuple[Layer, ...], fmt: ImageFormat, dpr: int, now: datetime
    ) -> RenderPlan:
        return build_plan(self.block, self.layer_orders[variant], layers, fmt, dpr, now)

    def fallback(self, fmt: ImageFormat, dpr: int) -> bytes:
        return self.fallbacks[(fmt, dpr)]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.block.id,
            "version": self.block.version,
            "updated_at": self.updated_at,
            "definition": self.block.definition,
        }


def build_plan(
    block: Block,
    order: LayerOrder,
    layers: tuple[Layer, ...],
    fmt: ImageFormat,
    dpr: int,
    now: datetime,
) -> RenderPlan:
    """The render plan of a resolved variant, its layers in `order`; `now` only when a
    layer shows the time (truncated to the second, so every open in that second shares
    one render)."""
    return RenderPlan(
        block.width,
        block.height,
        dpr,
        fmt,
        order.arrange(layers),
        now=now.replace(microsecond=0) if needs_clock(layers) else None,
        max_bytes=block.max_bytes,
        static_prefix=order.static,
    )


@dataclass(frozen=True, slots=True)
class BlockPreparer:
    """What preparing a block needs from the process: fonts, assets, sources, secrets."""

    resources: Resources
    sources: Sequence[Source]
    secret_names: Collection[str] = ()

    def __call__(
        self, block_id: str, definition: object, version: int, updated_at: str, *, strict: bool
    ) -> PreparedBlock:
        """`strict` when a marketer stores the block: it must also fit this server's
        configuration (its data sources' secrets). A stored block is loaded as it is."""
        return prepare_block(
            block_id,
            definition,
            version,
            updated_at,
            self.resources,
            self.sources,
            secret_names=self.secret_names if strict else None,
        )


def prepare_block(
    block_id: str,
    definition: object,
    version: int,
    updated_at: str,
    resources: Resources,
    sources: Sequence[Source],
    *,
    secret_names: Collection[str] | None = None,
) -> PreparedBlock:
    """Compile, check the default renders with no data, and pre-render it. CPU-bound."""
    block = compile_block(block_id, definition, version, resources, secret_names=secret_names)
    request = OpenRequest(at=datetime.now(UTC), block_tz=block.tz)
    try:
        choice = choose_variant(
            block, anonymous_context(sources, request), resources, default_only=True
        )
    except DefaultUnavailableError as exc:
        raise BlockError(
            [Problem("default", f"must render with no recipient data at all: {exc}")]
        ) from None
    default_link = safe_link(block, choice.link)
    orders = {v.name: layer_order(v) for v in (*block.variants, block.default)}
    if default_link is None:
        raise BlockError(
            [Problem("default.link", "must resolve to an http(s) URL whose host the block names")]
        )
    now = datetime.now(UTC).astimezone(zone(block.tz) if block.tz else UTC)
    try:
        fallbacks = {
            (fmt, dpr): render(build_plan(block, orders["default"], choice.layers, fmt, dpr, now))
            for fmt in FORMATS
            for dpr in DPRS
        }
    except ByteBudgetError as exc:
        raise BlockError([Problem("max_bytes", f"the default cannot fit: {exc}")]) from None
    personal_names = names_of(sources, Reach.PERSONAL)
    personal = frozenset(
        v.name
        for v in (*block.variants, block.default)
        if any(t.names & personal_names for layer in v.layers for _, t in layer.templates.values())
    )
    static_default = not any(layer.templates for layer in block.default.layers) and not (
        needs_clock(choice.layers)
    )
    shared_choice = (
        block.names <= names_of(sources, Reach.SHARED)
        and not block.data
        and block.split is None
        and not block.sticky
    )
    return PreparedBlock(
        block,
        default_link,
        fallbacks,
        updated_at,
        personal,
        static_default,
        orders,
        shared_choice,
        any(source.reads_address for source in active_sources(tuple(sources), block.names)),
    )


class BlockStore:
    """Persistence, change notification and the local snapshot of blocks."""

    def __init__(
        self,
        redis: Redis,
        prepare: BlockPreparer,
    ) -> None:
        self._redis = redis
        self._prepare = prepare
        self._snapshot: dict[str, PreparedBlock] = {}
        # The hot path's lookup, memory only: the snapshot's own `dict.get`, which costs
        # an open less than a method that calls it (the dict is changed, never replaced).
        self.get: Callable[[str], PreparedBlock | None] = self._snapshot.get
        self.loaded = False
        # This process among all the store's processes: writers wait for each to take
        # their change.
        self.presence = WorkerPresence(redis)
        # A sync's read can be answered just before a put or delete made here, and come
        # back after it: applied, it would undo that change until the change's own
        # message arrives. Each put or delete takes the next number; a sync leaves alone
        # the blocks changed here under a number above the last one taken before it read.
        self._changes_made = 0
        self._changed_here: dict[str, int] = {}
        self._store_script = redis.register_script(_STORE)
        self._remove_script = redis.register_script(_REMOVE)

    def all(self) -> list[PreparedBlock]:
        return [self._snapshot[k] for k in sorted(self._snapshot)]

    async def put(self, block_id: str, definition: object) -> PreparedBlock:
        """Validate, store with the next version, tell every process, update this one, and
        answer once every live process serves it (see `WorkerPresence.until_everywhere`)."""
        prepared = await asyncio.to_thread(
            partial(self._prepare, block_id, definition, 0, "", strict=True)
        )
        version = int(await self._redis.hincrby(VERSIONS_KEY, block_id, 1))
        updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"version": version, "updated_at": updated_at, "definition": definition}
        change = int(
            await self._store_script(
                keys=[BLOCKS_KEY, CHANGES_KEY], args=[block_id, orjson.dumps(record), CHANNEL]
            )
        )
        prepared = replace(
            prepared, block=replace(prepared.block, version=version), updated_at=updated_at
        )
        self._snapshot[block_id] = prepared
        self._note_change(block_id)
        await self.presence.until_everywhere(change, block_id)
        return prepared

    async def delete(self, block_id: str) -> bool:
        removed, change = await self._remove_script(
            keys=[BLOCKS_KEY, CHANGES_KEY], args=[block_id, CHANNEL]
        )
        self._snapshot.pop(block_id, None)
        self._note_change(block_id)
        if removed:
            await self.presence.until_everywhere(int(change), block_id)
        # Its poll's tally goes too, even when the block was already gone (a vote that
        # raced an earlier delete may have left one): a block made again with this id
        # starts a new tally.
        await delete_tally(self._redis, block_id)
        return bool(removed)

    async def sync_all(self) -> int:
        """Load every stored block whose version differs from the snapshot's. Returns the
        number of the last change the read included."""
        read_after = self._changes_made
        # One transaction: the blocks exactly as they were at that change.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(CHANGES_KEY)
            pipe.hgetall(BLOCKS_KEY)
            counter, stored = await pipe.execute()
        ids = {k.decode() if isinstance(k, bytes) else str(k) for k in stored}
        for block_id in set(self._snapshot) - ids:
            if not self._changed_since(block_id, read_after):
                del self._snapshot[block_id]
        for raw_id, raw in stored.items():
            block_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            await self._load(block_id, raw, read_after)
        # Whatever changed here before this read, the read has seen.
        self._changed_here = {b: n for b, n in self._changed_here.items() if n > read_after}
        self.loaded = True
        return int(counter or 0)

    async def sync_one(self, block_id: str) -> None:
        read_after = self._changes_made
        raw = await self._redis.hget(BLOCKS_KEY, block_id)
        if raw is None:
            if not self._changed_since(block_id, read_after):
                self._snapshot.pop(block_id, None)
        else:
            await self._load(block_id, raw, read_after)

    def _note_change(self, block_id: str) -> None:
        self._changes_made += 1
        self._changed_here[block_id] = self._changes_made

    def _changed_since(self, block_id: str, change: int) -> bool:
        return self._changed_here.get(block_id, 0) > change

    async def _load(self, block_id: str, raw: bytes | str, read_after: int) -> None:
        """Prepare the stored `raw` record into the snapshot, unless this process changed
        the block after the record was read (`read_after`), before or while preparing."""
        if self._changed_since(block_id, read_after):
            return
        try:
            record = orjson.loads(raw)
            version = int(record["version"])
            current = self._snapshot.get(block_id)
            if current is not None and current.block.version == version:
                return
            prepared = await asyncio.to_thread(
                partial(
                    self._prepare,
                    block_id,
                    record["definition"],
                    version,
                    record["updated_at"],
                    strict=False,
                )
            )
            if not self._changed_since(block_id, read_after):
                self._snapshot[block_id] = prepared
        except (BlockError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # A stored block that no longer compiles (an asset was removed, say) keeps
            # serving its last good snapshot, if any; the log says why.
            log.error("block %s could not be loaded: %s", block_id, exc)

    async def follow_changes(self, first_sync: asyncio.Future[None] | None = None) -> None:
        """Run until cancelled: apply published changes, resync periodically and on reconnect.

        `first_sync` resolves once the store has confirmed the subscription and the snapshot
        has been synced after it, so a process that waits for it before serving cannot miss
        a change made while it started; or with the first attempt's error, if the store
        cannot be reached (the feed goes on retrying)."""
        backoff = 0.1
        while True:
            try:
                # Registered before subscribing: a change made from now on is waited for
                # here, even one made before this process's first sync has finished.
                await self.presence.heartbeat()
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await _subscription_confirmed(pubsub)
                    # Anything missed while not subscribed.
                    await self.presence.acknowledge(await self.sync_all())
                    if first_sync is not None and not first_sync.done():
                        first_sync.set_result(None)
                    backoff = 0.1
                    await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if first_sync is not None and not first_sync.done():
                    first_sync.set_exception(exc)
                log.warning("block change feed interrupted (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + RESYNC_INTERVAL_S
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                # "CHANGE BLOCK_ID" (a block id has no space); a bare id comes from a
                # process of an earlier release, which numbers no change.
                number, _, block_id = text.rpartition(" ")
                await self.sync_one(block_id)
                # Messages arrive in the order of their numbers, and the snapshot now
                # holds this change and every one before it.
                if number.isdigit():
                    await self.presence.acknowledge(int(number))
            if loop.time() >= next_resync:
                await self.presence.acknowledge(await self.sync_all())
                next_resync = loop.time() + RESYNC_INTERVAL_S


async def _subscription_confirmed(pubsub: PubSub) -> None:
    """Wait for the store's reply to SUBSCRIBE: redis-py sends it without waiting, and a
    change published before the store registers it would reach no one here."""
    while True:
        message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        if message is None:
            raise RedisError("no reply to SUBSCRIBE")
        if message.get("type") == "subscribe":
            return


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel and wait. redis-py's pub/sub read can swallow a cancellation that races its
    own timeout, so cancel again until the task is really done."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
