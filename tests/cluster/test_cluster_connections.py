"""A click storm on a Redis Cluster, as on a single Redis (tests/server/datastore): each
click goes to its reader's page, and no master gets a connection per click."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from cluster.local_cluster import LocalCluster
from test_store_connections import CLICKS, MOST_CONNECTIONS, READERS_PAGE, click_storm

from server.settings import Settings


async def test_a_click_storm_on_a_cluster_waits_for_connections_to_each_master(
    make_client: Any, settings: Settings, cluster: LocalCluster
) -> None:
    masters = [aioredis.Redis(port=node.port) for node in cluster.masters()]
    try:
        answers, added = await click_storm(make_client, settings, masters)
    finally:
        for master in masters:
            await master.aclose()
    assert answers == [(302, READERS_PAGE)] * CLICKS
    # Each master: the pool's connections and the opens' own, not one per click.
    assert all(more <= MOST_CONNECTIONS + 1 for more in added), added
