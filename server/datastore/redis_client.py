"""The store client: one Redis server, or a Redis Cluster named by its seeds.

`ATOPEN_REDIS_URL=redis+cluster://HOST:PORT[,HOST:PORT...]` (`rediss+cluster://` for
TLS) gives redis-py's own `RedisCluster`, which learns the slots from the seeds and
follows failovers and resharding. Every other URL gives a plain `Redis`.

The rest of atopen holds the client as a `Redis`: the cluster client answers the same
command methods (a multi-key command must keep its keys in one slot, which the key
layout in `content_sources.redis_keys` sees to), and the few places that talk to connections
themselves (the opens' pipelined reads and batched writes) ask
`content_sources.redis_cluster_pipe.cluster_client` first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import RedisClusterUnreachableError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379


class StoreUrlError(ValueError):
    """A cluster URL that names no usable seed."""


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def cluster_seeds(url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """The username, password and (host, port) seeds of a `redis+cluster://` URL."""
    rest = url.partition("://")[2]
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    seeds: list[tuple[str, int]] = []
    for seed in hosts.split(","):
        host, port = _host_port(seed.strip())
        seeds.append((host, port))
    return username, password, seeds


def _host_port(seed: str) -> tuple[str, int]:
    if not seed:
        raise StoreUrlError("empty seed in the comma-separated list")
    if seed.startswith("["):  # [IPv6]:port
        host, _, tail = seed[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, colon, port_text = seed.rpartition(":")
        if not colon:
            host, port_text = seed, ""
    if not host:
        raise StoreUrlError(f"seed {seed!r} names no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreUrlError(f"seed {seed!r} has no valid port")
    return host, int(port_text)


def open_store(url: str, *, timeout_s: float, max_connections: int) -> Redis:
    """The client for `url`; nothing connects until the first command. It holds at most
    `max_connections` connections (to each node, on a cluster).

    Past that, a command waits up to `timeout_s` for a connection to come free. redis-py's
    own pools fail it at once instead, so a burst of clicks past their hundred connections
    sent readers to the default link, where the store would have answered in a
    millisecond."""
    if not is_cluster_url(url):
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        return Redis.from_pool(pool)
    username, password, seeds = cluster_seeds(url)
    cluster = StoreCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        username=username,
        password=password,
        ssl=url.lower().startswith("rediss+"),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        most_in_flight=max_connections,
    )
    # Typed as the plain client it stands in for (see the module's docstring).
    return cast(Redis, cluster)


@contextlib.contextmanager
def _unreachable_as_connection_error() -> Iterator[None]:
    try:
        yield
    except RedisClusterUnreachableError as exc:
        raise StoreConnectionError(f"no node of the cluster answers: {exc}") from exc


class StoreCluster(RedisCluster):
    """redis-py's cluster client, but:

    - a cluster none of whose nodes answers raises the ConnectionError a plain Redis
      raises when it is down (redis-py's own error for it is no RedisError), so every
      place that survives a store outage survives this one;
    - at most `most_in_flight` commands and pipelines run at once, and the others wait
      for one of them to end (up to the socket timeout), as they wait for a connection of
      a single Redis's pool. redis-py fails a command at once when its node's pool holds
      its most connections; with no more in flight than that, no node's pool fills up.
    """

    def __init__(self, *, most_in_flight: int, socket_timeout: float, **kwargs: Any) -> None:
        # A node's pool also holds connections that no command waits on: room for them.
        super().__init__(
            max_connections=most_in_flight + _ROOM_BESIDE_COMMANDS,
            socket_timeout=socket_timeout,
            **kwargs,
        )
        self._in_flight = asyncio.Semaphore(most_in_flight)
        self._wait_s = socket_timeout

    async def initialize(self, *args: Any, **kwargs: Any) -> StoreCluster:
        with _unreachable_as_connection_error():
            await super().initialize(*args, **kwargs)
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            with _unreachable_as_connection_error():
                return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refuses it
        return _StorePipeline(self, transaction)  # type: ignore[abstract]  # as redis-py does

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A place among the commands in flight, waited for up to the socket timeout."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._in_flight.acquire()
        except TimeoutError:
            raise StoreConnectionError("no connection to the cluster came free") from None
        try:
            yield
        finally:
            self._in_flight.release()


# Connections of a node's pool beside those of commands in flight (a subscription's).
_ROOM_BESIDE_COMMANDS = 4


class _StorePipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        cluster = cast(StoreCluster, self.cluster_client)
        async with cluster.turn():
            with _unreachable_as_connection_error():
                return await super().execute(*args, **kwargs)
