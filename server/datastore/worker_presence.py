"""Which atopen processes share the store, and which changes each has taken.

A block change answers its writer only once every live process (of every server on the
store) serves it. Each process heartbeats its presence and acknowledges the changes its
snapshot holds; a writer waits until no live process is behind, for at most
`ACK_TIMEOUT_S`. A process whose heartbeat is stale is taken for dead and not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("atopen.blocks")

# These keys take the blocks' key as their hash tag, so on Redis Cluster they share its
# slot with the blocks and their change counter.
WORKERS_KEY = "{atopen:blocks}:workers"  # sorted set: process id -> last heartbeat (store time)
APPLIED_KEY = "{atopen:blocks}:applied"  # hash: process id -> the last change it holds
HEARTBEAT_INTERVAL_S = 1.0
# A process whose heartbeat is older is taken for dead (killed, its machine gone): a write
# no longer waits for it. Long enough for a busy event loop to miss a few heartbeats.
STALE_AFTER_S = 5.0
# Dead processes' entries are removed by the others' heartbeats after this long.
FORGET_AFTER_S = 60.0
# How long a put or delete waits for live processes to take its change before it answers
# anyway. Taking a change means preparing the block (its pre-renders): a large block on
# a loaded machine takes a few seconds.
ACK_TIMEOUT_S = 10.0
ACK_POLL_FIRST_S = 0.002
ACK_POLL_MAX_S = 0.05

# KEYS: workers, applied; ARGV: process id, forget after (s). The store's clock, the
# same for every server, tells fresh heartbeats from stale ones.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return 0
"""
# KEYS: workers, applied; ARGV: change, stale after (s), the asking process. The live
# processes, other than the asking one, that do not hold the change yet.
_BEHIND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
local behind = {}
if #live > 0 then
  local applied = redis.call('HMGET', KEYS[2], unpack(live))
  for i, worker in ipairs(live) do
    if worker ~= ARGV[3] and (tonumber(applied[i]) or 0) < tonumber(ARGV[1]) then
      behind[#behind + 1] = worker
    end
  end
end
return behind
"""


class WorkerPresence:
    """This process's presence in the store, and the wait for every other's."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # Names this process among all the store's processes (of every server): a pid
        # alone repeats across machines and restarts.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._heartbeat_script = redis.register_script(_HEARTBEAT)
        self._behind_script = redis.register_script(_BEHIND)

    async def until_everywhere(self, change: int, block_id: str) -> None:
        """Wait until every other live process holds `change`, at most `ACK_TIMEOUT_S`.

        The change is stored either way: past the timeout, or when the store stops
        answering, the write answers all the same and the log names who lags."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_TIMEOUT_S
        pause = ACK_POLL_FIRST_S
        while True:
            try:
                behind = [
                    w.decode() if isinstance(w, bytes) else str(w)
                    for w in await self._behind_script(
                        keys=[WORKERS_KEY, APPLIED_KEY],
                        args=[change, STALE_AFTER_S, self.worker_id],
                    )
                ]
            except (RedisError, OSError) as exc:
                log.warning(
                    "block %s: change %d is stored, but whether every worker has it is "
                    "unknown (%s)",
                    block_id,
                    change,
                    exc,
                    extra={"fields": {"block": block_id, "change": change}},
                )
                return
            if not behind:
                return
            if loop.time() >= deadline:
                log.warning(
                    "block %s: change %d not acknowledged within %gs by worker(s) %s; "
                    "answered anyway: they serve the previous state until they take it",
                    block_id,
                    change,
                    ACK_TIMEOUT_S,
                    ", ".join(sorted(behind)),
                    extra={"fields": {"block": block_id, "change": change, "workers": behind}},
                )
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, ACK_POLL_MAX_S)

    async def keep_alive(self) -> None:
        """Run until cancelled: renew this process's heartbeat every `HEARTBEAT_INTERVAL_S`.

        Writers wait only for processes with a fresh heartbeat, so one that dies holds
        up no write for longer than `STALE_AFTER_S`."""
        failing = False
        while True:
            try:
                await self.heartbeat()
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning(
                        "block heartbeat failed (%s); writers stop waiting for this worker "
                        "after %gs, and it may serve blocks they changed since",
                        exc,
                        STALE_AFTER_S,
                    )
                failing = True
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def leave(self) -> None:
        """On a clean stop: writers need not wait for this process's heartbeat to go stale."""
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(WORKERS_KEY, self.worker_id)
                pipe.hdel(APPLIED_KEY, self.worker_id)
                await pipe.execute()

    async def heartbeat(self) -> None:
        await self._heartbeat_script(
            keys=[WORKERS_KEY, APPLIED_KEY], args=[self.worker_id, FORGET_AFTER_S]
        )

    async def acknowledge(self, change: int) -> None:
        """Tell writers this process's snapshot holds every change up to `change`."""
        await self._redis.hset(APPLIED_KEY, self.worker_id, change)
