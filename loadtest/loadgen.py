"""A small, fast HTTP/1.1 load generator for loopback benchmarks.

Python HTTP clients spend more CPU per request than the server under test, which on a
small machine measures the client. This one keeps raw keep-alive connections, writes
pre-encoded requests and parses only the status line, the headers it needs and the
body length. Two modes:
- closed loop (`rate=None`): each connection sends its next request as soon as the
  previous answer arrives: the server's capacity;
- open loop (`rate=R`): requests are started at R per second whatever happens, each on
  a free connection (opening more when all are busy), as opens arrive in real life:
  overload shows as latency and errors, not as a politely slower client.
Every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

REQUEST_TIMEOUT_S = 5.0
# How often the generator checks how late its own event loop runs.
LAG_TICK_S = 0.01


@dataclass
class Result:
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    timeouts: int = 0
    # How late the generator's own event loop ran, every 10 ms: the latencies include it.
    client_lag_s: list[float] = field(default_factory=list)
    # The CPU the generator itself spent: on the server's machine, taken from the server.
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_s) / self.duration_s if self.duration_s else 0.0

    @staticmethod
    def combined(parts: Sequence[Result]) -> Result:
        """Several runs of one case as one (rounds interleaved with another case's)."""
        total = Result(sum(part.duration_s for part in parts))
        for part in parts:
            total.latencies_s.extend(part.latencies_s)
            total.statuses.update(part.statuses)
            total.variants.update(part.variants)
            total.errors += part.errors
            total.timeouts += part.timeouts
            total.client_lag_s.extend(part.client_lag_s)
            total.client_cpu_s += part.client_cpu_s
        return total

    def percentile_ms(self, p: float) -> float:
        return _percentile_ms(self.latencies_s, p)

    def client_lag_ms(self, p: float) -> float:
        return _percentile_ms(self.client_lag_s, p)


def _percentile_ms(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> tuple[int, str]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        variant = ""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"x-atopen-variant":
                variant = value.strip().decode()
        if length:
            await self.reader.readexactly(length)
        return status, variant

    def close(self) -> None:
        self.writer.close()


def _encode(host: str, port: int, paths: Sequence[str], user_agent: str) -> list[bytes]:
    return [
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {user_agent}\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode()
        for path in paths
    ]


async def run(
    host: str,
    port: int,
    paths: Sequence[str],
    *,
    duration_s: float,
    connections: int = 32,
    rate: float | None = None,
    user_agent: str = "Mozilla/5.0",
) -> Result:
    """Send the paths round-robin for `duration_s`; closed loop unless `rate` is given."""
    result = Result(duration_s)
    end = time.perf_counter() + duration_s
    cpu_before = time.process_time()
    watcher = asyncio.create_task(_watch_own_loop(result, end))
    try:
        requests = itertools.cycle(_encode(host, port, paths, user_agent))
        await _send(host, port, requests, result, end, connections, rate)
    finally:
        await watcher
        result.client_cpu_s = time.process_time() - cpu_before
    return result


async def _watch_own_loop(result: Result, end: float) -> None:
    loop = asyncio.get_running_loop()
    while time.perf_counter() < end:
        before = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        result.client_lag_s.append(max(0.0, loop.time() - before - LAG_TICK_S))


async def _send(
    host: str,
    port: int,
    requests: Iterator[bytes],
    result: Result,
    end: float,
    connections: int,
    rate: float | None,
) -> None:
    idle: list[_Connection] = []

    async def connect() -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return _Connection(reader, writer)

    async def one(connection: _Connection | None) -> _Connection | None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if connection is None:
                    connection = await connect()
                status, variant = await connection.request(next(requests))
        except TimeoutError:
            result.timeouts += 1
            if connection is not None:
                connection.close()
            return None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors += 1
            if connection is not None:
                connection.close()
            return None
        result.latencies_s.append(time.perf_counter() - started)
        result.statuses[status] += 1
        result.variants[variant] += 1
        return connection

    if rate is None:

        async def loop() -> None:
            connection: _Connection | None = None
            while time.perf_counter() < end:
                connection = await one(connection)
            if connection is not None:
                connection.close()

        await asyncio.gather(*(loop() for _ in range(connections)))
        return

    pending: set[asyncio.Task[None]] = set()

    async def open_one() -> None:
        connection = await one(idle.pop() if idle else None)
        if connection is not None:
            idle.append(connection)

    started = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) < end:
        due = int((now - started) * rate)
        for _ in range(due - sent):
            task = asyncio.create_task(open_one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        sent = max(sent, due)
        await asyncio.sleep(0.001)
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 1)
    for connection in idle:
        connection.close()
