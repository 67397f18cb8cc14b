"""Auto-pipelining: the store reads of concurrent opens go out together.

At thousands of opens per second, each open's one round trip would be a separate
write, read and connection checkout. Instead, every command issued during one turn of
the event loop is queued, and at the end of the turn they are written as one batch on
one pipelining connection (`StorePipe`); each open gets its own replies back. Latency is
the same round trip; the per-command overhead is shared. Reads that are the same for
every open (a block's inventory items) can be kept for a short while, so that the opens
of a spike share one read instead of each waiting for its own.

`execute_raw` is the lean pipeline of the other hot paths (the opens' batched writes):
redis-py's own pipeline costs tens of microseconds per command (encoding each argument,
a timeout per reply), which at thousands of opens per second is a good part of a core.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from content_sources.deadlines import seconds_left
from content_sources.lru import LRU
from content_sources.redis_cluster_pipe import (
    ClusterStorePipe,
    cluster_client,
    execute_raw_on_cluster,
)
from content_sources.redis_pipe import StorePipe, pack
from content_sources.source import RedisCommand
from content_sources.store_timing import round_trip_took

MAX_BATCH_COMMANDS = 2000
# Distinct shared reads kept (a block's inventory items are one).
MAX_SHARED_READS = 4096


@dataclass(frozen=True, slots=True)
class KeptReplies:
    """Replies to shared reads, when they were asked for (`time.monotonic()`), and how
    many times the batcher had forgotten its shared replies then."""

    asked_at: float
    replies: list[object]
    forgotten: int


# An open's commands, where its replies go, and when it stops waiting for them.
_Waiting = tuple[Sequence[RedisCommand], "asyncio.Future[list[object]]", float | None]


class StoreBatcher:
    """Batches the reads of the opens of one turn of the event loop, and keeps the
    replies to shared reads (the same for every open) for up to `shared_max_age_s`."""

    def __init__(self, redis: Redis, shared_max_age_s: float = 0.0) -> None:
        cluster = cluster_client(redis)
        self._pipe: StorePipe | ClusterStorePipe = (
            StorePipe(redis.connection_pool) if cluster is None else ClusterStorePipe(cluster)
        )
        self._queue: list[_Waiting] = []
        self._shared_max_age_s = shared_max_age_s
        self._shared: LRU[tuple[RedisCommand, ...], KeptReplies] = LRU(MAX_SHARED_READS)
        self._forgotten = 0  # times `forget_shared` was called

    async def execute(
        self,
        commands: Sequence[RedisCommand],
        deadline: float | None = None,
        *,
        shared: bool = False,
    ) -> list[object]:
        """The replies to `commands` (reads only), in order; raises what the store raised.

        `deadline` (a `time.monotonic()` instant): TimeoutError if the replies are not
        back by then. Opens sent together share the earliest of their deadlines, which
        lie within one turn of the event loop: one timer per round trip, not per open.

        `shared`: the replies are the same for every open (a block's inventory items),
        so replies read less than `shared_max_age_s` ago (counted from when they were
        asked for) are answered again without a round trip.
        """
        if not shared or not self._shared_max_age_s:
            return await self._read(commands, deadline)
        replies = self.kept(commands)
        if replies is None:
            asked_at, kept = time.monotonic(), self._shared
            replies = await self._read(commands, deadline)
            # Not if the data changed while the replies were on their way.
            if kept is self._shared:
                kept.put(tuple(commands), KeptReplies(asked_at, replies, self._forgotten))
            replies = [_own(reply) for reply in replies]
        return replies

    def kept(self, commands: Sequence[RedisCommand]) -> list[object] | None:
        """The replies to shared `commands` if they were read recently enough, else None
        (`execute` answers them too; this spares a coroutine when they were)."""
        kept = self.kept_replies(tuple(commands))
        return None if kept is None else [_own(reply) for reply in kept.replies]

    def kept_replies(self, commands: tuple[RedisCommand, ...]) -> KeptReplies | None:
        """The kept replies to shared `commands`: the same object for as long as the same
        replies are kept, None when they are not or are too old. A caller may remember
        what it made of them under it, for as long as they are `still_fresh`."""
        if not self._shared_max_age_s:
            return None
        kept = self._shared.get(commands)
        return kept if kept is not None and self.still_fresh(kept) else None

    def still_fresh(self, kept: KeptReplies) -> bool:
        """Whether replies that `kept_replies` gave may still be answered: young enough,
        and not forgotten since. While they are, `kept_replies` gives the same object
        (or, once they have made room for others, None), so a caller that remembers
        what it made of them need not look them up at every open."""
        return (
            kept.forgotten == self._forgotten
            and time.monotonic() - kept.asked_at < self._shared_max_age_s
        )

    def forget_shared(self) -> None:
        """Read shared data afresh from the next open on (this process changed it)."""
        self._shared = LRU(MAX_SHARED_READS)
        self._forgotten += 1

    async def _read(self, commands: Sequence[RedisCommand], deadline: float | None) -> list[object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[object]] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((commands, future, deadline))
        return await future

    async def connect(self) -> None:
        """Open the connection now; StoreConnectionError if the store cannot be reached."""
        await self._pipe.connect()

    def close(self) -> None:
        """Close the connection; reads still waiting get a ConnectionError."""
        self._pipe.close()

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        start = 0
        while start < len(queue):
            end, size = start, 0
            while end < len(queue) and size < MAX_BATCH_COMMANDS:
                size += len(queue[end][0])
                end += 1
            self._send(queue[start:end])
            start = end

    def _send(self, batch: list[_Waiting]) -> None:
        deadlines = [deadline for _, _, deadline in batch if deadline is not None]
        # Opens arriving together often read the same keys (a block's inventory items,
        # one recipient's images): each distinct command goes once, for all of them.
        distinct: dict[RedisCommand, int] = {}
        slots = [
            [distinct.setdefault(command, len(distinct)) for command in commands]
            for commands, _, _ in batch
        ]
        deliver = partial(_deliver, batch, slots, time.perf_counter())
        self._pipe.send(list(distinct), deliver, min(deadlines) if deadlines else None)


def _deliver(
    batch: list[_Waiting],
    slots: list[list[int]],
    started: float,
    outcome: list[object] | BaseException,
) -> None:
    """Hand each open of `batch` its own replies (or the batch's error)."""
    if isinstance(outcome, BaseException):
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(outcome)
        return
    round_trip_took(time.perf_counter() - started)
    for (_, future, _), indices in zip(batch, slots, strict=True):
        if future.done():
            continue  # the open gave up
        # Lists are copied: an open may not change what another open reads.
        mine = [_own(outcome[index]) for index in indices]
        error = next((r for r in mine if isinstance(r, Exception)), None)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(mine)


def _own(reply: object) -> object:
    return list(reply) if isinstance(reply, list) else reply


async def execute_raw(
    redis: Redis, commands: Sequence[RedisCommand], *, deadline: float | None = None
) -> list[object]:
    """Send `commands` in one write on one pooled connection; their replies, in order.

    Replies are as the store sends them (no client-side conversion, which none of the
    commands sent here needs); an error reply comes back as its ResponseError. The whole
    round trip has one timeout: until `deadline` (a `time.monotonic()` instant) or the
    client's socket timeout, whichever comes first.
    """
    cluster = cluster_client(redis)
    kwargs = (redis.connection_pool if cluster is None else cluster.nodes_manager).connection_kwargs
    timeout = kwargs.get("socket_timeout")
    left = seconds_left(deadline)
    if left is not None and (timeout is None or left < timeout):
        timeout = left
    if cluster is not None:
        return await execute_raw_on_cluster(cluster, commands, timeout)
    payload = pack(commands)
    pool = redis.connection_pool
    # The pool hands out a checked connection: one the store closed is reconnected.
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    replies: list[object] = []
    try:
        async with asyncio.timeout(timeout):
            await connection.send_packed_command(payload, check_health=False)
            for _ in commands:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    replies.append(exc)
        return replies
    except BaseException:
        # The connection may hold unread replies: it must not serve anyone else.
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
