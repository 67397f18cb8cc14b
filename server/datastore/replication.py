"""On a Redis Cluster, an API write answers once the replicas hold it.

A master that dies takes with it what it acknowledged but had not yet sent to its
replica; the replica that takes over never had it. So before an API write answers, on
each master: one write of its own (a marker key in a slot that master serves) and then
`WAIT 1`, both on one connection. Replication keeps each master's writes in order, so
once a replica has the marker it has every write that master acknowledged before it,
the API's among them. `WAIT` cannot be asked about another connection's writes, hence
the marker.

A master that cannot be asked (it died, or the failover is under way) may have taken
the write without passing it on: the API answers 503, and the client sends the write
again (every API write may be repeated). A replica that does not answer within
`WAIT_TIMEOUT_MS` (it is down, or catching up), or a master without a replica, does not
fail the write: the API answers, and the log says which master's writes are on that
master alone until a replica has them.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from content_sources.redis_cluster_pipe import MAP_ERRORS, SlotMap, cluster_client, on_connection
from content_sources.redis_keys import PREFIX

log = logging.getLogger("atopen.store")

REPLICAS = 1
WAIT_TIMEOUT_MS = 1000
# The markers expire: they are only ever written, never read.
MARKER_TTL_MS = 60_000


@lru_cache(maxsize=16384)
def marker_key(slot: int) -> str:
    """A key in `slot`: its hash tag is the first number whose slot that is."""
    tag = 0
    while key_slot(str(tag).encode()) != slot:
        tag += 1
    return f"{PREFIX}replicated:{{{tag}}}"


async def until_replicated(redis: Redis) -> bool:
    """Wait until every master's replica holds what that master acknowledged so far (on
    a cluster; a single Redis has no replicas atopen knows of). False when a master
    could not be asked: what it acknowledged may be lost."""
    cluster = cluster_client(redis)
    if cluster is None:
        return True
    try:
        await SlotMap(cluster).ready()
    except (RedisError, OSError) as exc:
        log.warning("could not ask the replicas whether they hold the write: %r", exc)
        return False
    asked = await asyncio.gather(*(_wait_on(node, slot) for node, slot in _masters(cluster)))
    if not all(asked):
        # A master gone: the next writes go where the cluster says they now belong.
        await _reread_slots(cluster)
    return all(asked)


async def _reread_slots(cluster: RedisCluster) -> None:
    try:
        await cluster.nodes_manager.initialize()
    except MAP_ERRORS as exc:
        log.warning("could not read the cluster's slot map: %r", exc)


def _masters(cluster: RedisCluster) -> list[tuple[ClusterNode, int]]:
    """Each master that has a replica, with a slot it serves. One without (its replica
    took over from it, or is gone) is not waited for: its writes are on it alone."""
    found: dict[str, tuple[ClusterNode, int]] = {}
    alone: set[str] = set()
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        if len(nodes) > 1:
            found.setdefault(nodes[0].name, (nodes[0], slot))
        elif nodes:
            alone.add(nodes[0].name)
    if alone:
        log.warning(
            "store write not replicated on master(s) %s: no replica",
            ", ".join(sorted(alone)),
            extra={"fields": {"masters": sorted(alone)}},
        )
    return list(found.values())


async def _wait_on(node: ClusterNode, slot: int) -> bool:
    """Whether `node` could be asked (its replica may still have been too slow)."""
    commands = [
        ("SET", marker_key(slot), b"1", "PX", MARKER_TTL_MS),
        ("WAIT", REPLICAS, WAIT_TIMEOUT_MS),
    ]
    try:
        marked, replicas = await on_connection(node, commands, WAIT_TIMEOUT_MS / 1000 + 1.0)
        if isinstance(marked, RedisError):  # not its slot any more, say
            raise marked
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "could not ask master %s whether its replica holds the write: %r", node.name, exc
        )
        return False
    if not isinstance(replicas, int) or replicas < REPLICAS:
        log.warning(
            "store write not replicated: master %s has no replica that acknowledged it "
            "within %d ms (%s); its writes are on that master alone until one does",
            node.name,
            WAIT_TIMEOUT_MS,
            replicas,
            extra={"fields": {"master": node.name}},
        )
    return True
