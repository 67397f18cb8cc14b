"""The opens' raw store traffic on a Redis Cluster: each command to its slot's master.

On one Redis, a batch of commands goes out in one write on one connection. On a
cluster, the same batch is cut by node: each master gets, in one write on its own
connection, the commands whose keys it serves, and the replies are put back in the
batch's order. All of one recipient's keys share a slot (`content_sources.redis_keys`), so
a personal open's reads go to one master; the nodes of one batch are asked at once, so
a batch costs one round trip whatever the number of nodes.

`ClusterStorePipe` stands in for `StorePipe` (reads, one pipelining connection per
master); `execute_raw_on_cluster` for `execute_raw` (writes, never sent twice). A reply
`MOVED` (the slot has another master now: a failover or a resharding) and a lost
connection make the slot map be read again, and a read is then sent once more. While a
master is down and its replica not yet promoted, its commands answer errors: the opens
that needed them serve their block's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import partial

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from content_sources.redis_pipe import Deliver, StorePipe, pack
from content_sources.source import RedisCommand

log = logging.getLogger("atopen.store")

# Commands whose every argument is a key; the others name theirs first, or (scripts)
# after their count.
_ALL_KEYS = frozenset({"MGET", "DEL", "EXISTS", "UNLINK", "TOUCH"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA"})
# What asking the cluster for its slot map may raise (none of its nodes answering is a
# RedisClusterException, not a RedisError).
MAP_ERRORS = (RedisError, RedisClusterException, OSError)
# The slot map is read again at most this often, however many replies say it changed.
REFRESH_INTERVAL_S = 0.25


def cluster_client(redis: object) -> RedisCluster | None:
    """The cluster client `redis` is (atopen holds it typed as a plain `Redis`), or None."""
    return redis if isinstance(redis, RedisCluster) else None


def command_keys(command: RedisCommand) -> Sequence[str | bytes | int | float]:
    name = str(command[0]).upper()
    if name in _SCRIPTS:
        return command[3 : 3 + int(command[2])]
    if name in _ALL_KEYS:
        return command[1:]
    return command[1:2]


def slot_of(key: str | bytes | int | float) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


# Where each reply of the caller's batch comes from: one part's reply, or (a multi-key
# read cut by slot) the concatenation of several parts' replies.
_Source = int | list[int]


def split_by_slot(commands: Sequence[RedisCommand]) -> tuple[list[RedisCommand], list[_Source]]:
    """`commands` as parts that each touch one slot: an MGET over several slots becomes
    one MGET per slot (an inventory's items spread over the cluster). Other commands
    are left whole; one that spans slots gets the store's CROSSSLOT error."""
    parts: list[RedisCommand] = []
    sources: list[_Source] = []
    for command in commands:
        if str(command[0]).upper() == "MGET" and len(command) > 2:
            by_slot: dict[int, list[str | bytes | int | float]] = defaultdict(list)
            for key in command[1:]:
                by_slot[slot_of(key)].append(key)
            if len(by_slot) > 1:
                indices = []
                for keys in by_slot.values():
                    indices.append(len(parts))
                    parts.append(("MGET", *keys))
                # Replies come back per slot; the caller wants them in its key order.
                sources.append(_merge_plan(indices, list(by_slot.values()), command[1:]))
                continue
        sources.append(len(parts))
        parts.append(command)
    return parts, sources


def _merge_plan(
    indices: list[int],
    groups: list[list[str | bytes | int | float]],
    keys: Sequence[str | bytes | int | float],
) -> list[int]:
    """For each key of the original MGET: `part * 65536 + position` of its reply."""
    where: dict[str | bytes | int | float, int] = {}
    for part, group in zip(indices, groups, strict=True):
        for position, key in enumerate(group):
            where.setdefault(key, part * 65536 + position)
    return [where[key] for key in keys]


def assemble(replies: Sequence[object], sources: Sequence[_Source]) -> list[object]:
    """The caller's replies, from the parts' (`split_by_slot`)."""
    out: list[object] = []
    for source in sources:
        if isinstance(source, int):
            out.append(replies[source])
            continue
        merged: list[object] = []
        for where in source:
            reply = replies[where // 65536]
            if isinstance(reply, BaseException):
                merged = reply  # type: ignore[assignment]
                break
            merged.append(reply[where % 65536] if isinstance(reply, list) else None)
        out.append(merged)
    return out


class SlotMap:
    """Which master serves each command, read again when the cluster says it changed."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = -math.inf

    async def ready(self) -> None:
        """Learn the slot map if not known yet; StoreConnectionError if no node answers."""
        try:
            await self._cluster.initialize()
        except RedisClusterException as exc:
            raise StoreConnectionError(f"no node of the cluster answers: {exc}") from exc

    @property
    def known(self) -> bool:
        return bool(self._cluster.nodes_manager.slots_cache)

    def masters(self) -> list[ClusterNode]:
        slots = self._cluster.nodes_manager.slots_cache
        return list({nodes[0].name: nodes[0] for nodes in slots.values()}.values())

    def node_of(self, command: RedisCommand) -> ClusterNode:
        keys = command_keys(command)
        manager = self._cluster.nodes_manager
        if not keys:
            return self._cluster.get_default_node()
        return manager.slots_cache[slot_of(keys[0])][0]

    def changed(self) -> None:
        """Read the slot map again soon (a MOVED reply, a master that went away)."""
        if self._refreshing is not None:
            return
        wait = max(0.0, self._refreshed_at + REFRESH_INTERVAL_S - time.monotonic())
        self._refreshing = asyncio.ensure_future(self._refresh(wait))

    async def refreshed(self) -> None:
        """Wait for the slot map to be read again (now, or by the refresh under way)."""
        self.changed()
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)

    async def _refresh(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            await self._cluster.nodes_manager.initialize()
        except MAP_ERRORS as exc:
            log.warning("could not read the cluster's slot map: %r", exc)
        finally:
            self._refreshed_at = time.monotonic()
            self._refreshing = None

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()


def _redirected(reply: object) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith(("MOVED ", "ASK "))


def _lost(reply: object) -> bool:
    return isinstance(reply, StoreConnectionError | TimeoutError | OSError)


class ClusterStorePipe:
    """`StorePipe` on a cluster: one pipelining connection per master, each batch cut
    by node and sent to all of them at once."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.slots = SlotMap(cluster)
        self._pipes: dict[str, StorePipe] = {}
        self._closed = False

    async def connect(self) -> None:
        """Learn the slot map and open a connection to every master now."""
        await self.slots.ready()
        for node in self.slots.masters():
            await self.pipe(node).connect()

    def send(
        self, commands: Sequence[RedisCommand], deliver: Deliver, deadline: float | None
    ) -> None:
        """As `StorePipe.send`; a command whose master cannot answer gets its error as
        its reply, so only the opens that needed it fail."""
        if self._closed:
            deliver(StoreConnectionError("the store connection is closed"))
            return
        if not self.slots.known:
            waiting = self._send_when_known(commands, deliver, deadline)
            asyncio.ensure_future(waiting).add_done_callback(_retrieved)
            return
        _Routed(self, commands, deliver, deadline).send()

    async def _send_when_known(
        self, commands: Sequence[RedisCommand], deliver: Deliver, deadline: float | None
    ) -> None:
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self.slots.ready()
        except (RedisError, OSError, TimeoutError) as exc:
            deliver(exc)
            return
        _Routed(self, commands, deliver, deadline).send()

    def pipe(self, node: ClusterNode) -> StorePipe:
        """The pipelining connection to `node`, opened at its first batch."""
        pipe = self._pipes.get(node.name)
        if pipe is None:
            pipe = self._pipes[node.name] = StorePipe(node)
        return pipe

    def close(self) -> None:
        self._closed = True
        self.slots.close()
        for pipe in self._pipes.values():
            pipe.close()


def _retrieved(task: asyncio.Future[None]) -> None:
    """A background step's end: its error, if any, is taken (the replies carry what
    the callers need to know), not left for the loop to report as never retrieved."""
    if not task.cancelled():
        task.exception()


def _loop_time(deadline: float | None) -> float | None:
    """A `time.monotonic()` deadline on the event loop's clock."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


class _Routed:
    """One batch on its way: its parts by node, their replies, and one resend of the
    reads a MOVED or a lost connection turned away."""

    def __init__(
        self,
        owner: ClusterStorePipe,
        commands: Sequence[RedisCommand],
        deliver: Deliver,
        deadline: float | None,
    ) -> None:
        self._owner = owner
        self._parts, self._sources = split_by_slot(commands)
        self._replies: list[object] = [None] * len(self._parts)
        self._deliver = deliver
        self._deadline = deadline
        self._waiting = 0
        self._retried = False

    def send(self, indices: Sequence[int] | None = None) -> None:
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        slots = self._owner.slots
        for index in range(len(self._parts)) if indices is None else indices:
            try:
                node = slots.node_of(self._parts[index])
            except (KeyError, IndexError, RedisError):
                self._replies[index] = StoreConnectionError("no master serves the slot")
                continue
            by_node.setdefault(node.name, (node, []))[1].append(index)
        self._waiting = len(by_node)
        if not by_node:
            self._finish()
            return
        for node, node_indices in by_node.values():
            commands = [self._parts[i] for i in node_indices]
            done = partial(self._answered, node_indices)
            self._owner.pipe(node).send(commands, done, self._deadline)

    def _answered(self, indices: list[int], outcome: list[object] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            for index in indices:
                self._replies[index] = outcome
        else:
            for index, reply in zip(indices, outcome, strict=True):
                self._replies[index] = reply
        self._waiting -= 1
        if self._waiting == 0:
            self._finish()

    def _finish(self) -> None:
        turned_away = [i for i, r in enumerate(self._replies) if _redirected(r) or _lost(r)]
        if turned_away:
            # Not once the deadline has passed: nobody waits for the replies any more.
            expired = any(isinstance(self._replies[i], TimeoutError) for i in turned_away)
            if not self._retried and not expired:
                self._retried = True
                asyncio.ensure_future(self._resend(turned_away)).add_done_callback(_retrieved)
                return
            self._owner.slots.changed()
        self._deliver(assemble(self._replies, self._sources))

    async def _resend(self, indices: list[int]) -> None:
        """Once the slot map is read again: the reads it sent to the wrong node."""
        try:
            async with asyncio.timeout_at(_loop_time(self._deadline)):
                await self._owner.slots.refreshed()
        except TimeoutError:
            self._deliver(assemble(self._replies, self._sources))
            return
        self.send(indices)


async def execute_raw_on_cluster(
    cluster: RedisCluster, commands: Sequence[RedisCommand], timeout_s: float | None
) -> list[object]:
    """`execute_raw` on a cluster: each master's commands in one write on one of its
    pooled connections, all masters at once; the replies in order. A write is never
    sent twice: a master that cannot be reached gives its commands that error."""
    slots = SlotMap(cluster)
    await slots.ready()
    parts, sources = split_by_slot(commands)
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, part in enumerate(parts):
        node = slots.node_of(part)
        by_node.setdefault(node.name, (node, []))[1].append(index)
    replies: list[object] = [None] * len(parts)

    async def on_node(node: ClusterNode, indices: list[int]) -> None:
        try:
            answers = await on_connection(node, [parts[i] for i in indices], timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            answers = [exc] * len(indices)
        for index, answer in zip(indices, answers, strict=True):
            replies[index] = answer

    await asyncio.gather(*(on_node(node, indices) for node, indices in by_node.values()))
    if any(_redirected(r) or _lost(r) for r in replies):
        with contextlib.suppress(*MAP_ERRORS):  # the replies say what failed
            await cluster.nodes_manager.initialize()  # the next flush goes to the right nodes
    return assemble(replies, sources)


async def on_connection(
    node: ClusterNode, commands: Sequence[RedisCommand], timeout_s: float | None
) -> list[object]:
    """`commands` in one write on one of `node`'s pooled connections: their replies, an
    error reply as its ResponseError."""
    connection = node.acquire_connection()
    replies: list[object] = []
    try:
        async with asyncio.timeout(timeout_s):
            await connection.send_packed_command(pack(commands), check_health=False)
            for _ in commands:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as exc:
                    replies.append(exc)
    except BaseException:
        # It may hold unread replies: it must not serve anyone else.
        await connection.disconnect(nowait=True)
        raise
    finally:
        node.release(connection)
    return replies
