"""On a Redis Cluster, an API write answers once the replicas hold it.

A master that dies takes with it what it acknowledged but had not yet sent to its
replica; the replica that takes over never had it. So before an API write answers, on
each master: one write of its own (a marker key in a slot that master serves) and then
`WAIT 1`, both on one connection. Replication keeps each master's writes in order, so
once a replica has the marker it has every write that master acknowledged before it,
the API's among them. `WAIT` cannot be asked about another connection's writes, hence
the marker.

A replica that does not answer within `WAIT_TIMEOUT_MS` (it is down, or catching up)
does not fail the write, which is stored: the API answers, and the log says which
master's writes are on that master alone until its replica returns.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from content_sources.cluster_pipe import cluster_client, on_connection
from content_sources.keys import PREFIX

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


async def until_replicated(redis: Redis) -> None:
    """Wait until every master's replica holds what that master acknowledged so far (on
    a cluster; a single Redis has no replicas atopen knows of)."""
    cluster = cluster_client(redis)
    if cluster is None:
        return
    try:
        await cluster.initialize()
        masters = _masters(cluster)
    except (RedisError, OSError) as exc:
        log.warning("could not ask the replicas whether they hold the write: %r", exc)
        return
    await asyncio.gather(*(_wait_on(node, slot) for node, slot in masters))


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


async def _wait_on(node: ClusterNode, slot: int) -> None:
    commands = [
        ("SET", marker_key(slot), b"1", "PX", MARKER_TTL_MS),
        ("WAIT", REPLICAS, WAIT_TIMEOUT_MS),
    ]
    try:
        _, replicas = await on_connection(node, commands, WAIT_TIMEOUT_MS / 1000 + 1.0)
    except (RedisError, OSError, TimeoutError) as exc:
        replicas = exc
    if not isinstance(replicas, int) or replicas < REPLICAS:
        log.warning(
            "store write not replicated: master %s has no replica that acknowledged it "
            "within %d ms (%s); its writes are on that master alone until one does",
            node.name,
            WAIT_TIMEOUT_MS,
            replicas,
            extra={"fields": {"master": node.name}},
        )
