"""Auto-pipelining: the store commands of concurrent opens go out together.

At thousands of opens per second, each open's one round trip would be a separate
write, read and connection checkout. Instead, every command issued during one turn of
the event loop is queued, and at the end of the turn they are sent as one pipeline on
one connection; each open gets its own replies back. Latency is the same round trip;
the per-command overhead is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from content_sources.base import RedisCommand

MAX_BATCH_COMMANDS = 2000


class StoreBatcher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[Sequence[RedisCommand], asyncio.Future[list[object]]]] = []
        self._background: set[asyncio.Task[None]] = set()

    async def execute(self, commands: Sequence[RedisCommand]) -> list[object]:
        """The replies to `commands`, in order; raises what the store raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[object]] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((commands, future))
        return await future

    def _flush(self) -> None:
        while self._queue:
            batch: list[tuple[Sequence[RedisCommand], asyncio.Future[list[object]]]] = []
            size = 0
            while self._queue and size < MAX_BATCH_COMMANDS:
                commands, future = self._queue.pop(0)
                batch.append((commands, future))
                size += len(commands)
            task = asyncio.ensure_future(self._send(batch))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send(
        self, batch: list[tuple[Sequence[RedisCommand], asyncio.Future[list[object]]]]
    ) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for command in commands:
                        pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        offset = 0
        for commands, future in batch:
            mine = replies[offset : offset + len(commands)]
            offset += len(commands)
            if future.done():
                continue  # the open gave up (its deadline passed)
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)
