"""What recording costs at flush time, per record: the worker's Python and the store's CPU.

The open log writes a worker's records every 50 ms; at 20,000 opens a second a flush
holds about 1,000 opens. This builds such batches (opens of two blocks by distinct signed
readers out of 20,000, from a few mail apps' User-Agents, every open human so that every
write happens) and measures, apart from any server:

- the worker: the CPU time (`time.thread_time`) of turning the batches into the bytes the
  open log sends (`RecordWriter.flush_commands`, then `pack`), the least of a few passes
  over them (a pass that neighbours slowed down counts for nothing);
- the store: the same bytes sent to a dedicated embedded Redis (its append-only file
  written, as the embedded store runs), batch after batch, and its own CPU
  (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`) before and after; with
  `--instructions`, also the instructions it runs for them, counted by callgrind, which
  neighbours do not move at all.

`python -m loadtest.bench_record_flush` prints them; `bench_records` prints them too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis.connection import AbstractConnection

from content_sources.redis_batch import execute_raw
from content_sources.redis_pipe import pack
from loadtest.bench_instructions import callgrind_control, dump_total, running, valgrind
from loadtest.bench_serve import HOST, free_port
from server.datastore.embedded_redis import EmbeddedRedis, find_redis_server
from server.records.writes import PendingOpen, PendingRecords, RecordWriter

# The store as the embedded one runs it: the append-only file written, no snapshots.
STORE_OPTIONS = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
READERS = 20_000
OPENS_PER_FLUSH = 1_000
# Flushes sent before measuring: the scripts loaded, the day's HyperLogLogs past their
# sparse encoding (a day of opens of a block makes them dense), readers' sets begun.
WARM_FLUSHES = 20
# Human opens: Apple Mail on an iPhone without MPP, Gmail's image proxy, Outlook.
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.5095; Pro)",
)
# Two blocks: a shared one of one variant, and a split of two.
BLOCK_VARIANTS = (("shared", ("summer",)), ("offer", ("a", "b")))


def batches(count: int, readers: int, first_flush: int = 0) -> Iterator[PendingRecords]:
    """`count` flushes' worth of pending opens from flush `first_flush` on, each by the
    next distinct readers out of `readers` (in turn, so each reader comes back after
    `readers` opens), each made when it is asked for (the store's keys and stream ids
    move on as in a running server)."""
    rng = random.Random(first_flush)
    for n in range(first_flush, first_flush + count):
        first = n * OPENS_PER_FLUSH
        now = time.time()
        opens: list[PendingOpen] = []
        for i in range(OPENS_PER_FLUSH):
            block, variants = BLOCK_VARIANTS[0 if rng.random() < 0.7 else 1]
            opens.append(
                (
                    now - 0.05 + i * 0.00005,
                    block,
                    1,
                    rng.choice(variants),
                    f"r{(first + i) % readers}",
                    rng.choice(USER_AGENTS),
                    None,
                    "cached",
                    "https://shop.example.com/",
                )
            )
        yield PendingRecords(opens=opens)


def writer() -> RecordWriter:
    return RecordWriter(max_records=1_000_000, retention_s=30 * 86_400, click_memory_s=86_400)


def flush_bytes(records: RecordWriter, pending: PendingRecords) -> tuple[bytes, int]:
    """What the open log sends for `pending`, and how many commands that is."""
    commands = records.flush_commands(pending, ())
    return pack(commands), len(commands)


@dataclass(frozen=True)
class FlushCost:
    records: int
    worker_s: float  # thread CPU time turning them into bytes
    round_trips_s: float  # and with sending them and reading the replies, on an event loop
    store_s: float  # the store's CPU running them
    commands: int
    sent_bytes: int

    def line(self) -> str:
        per = 1e6 / self.records
        return (
            f"records at flush time ({self.records:,} opens, {OPENS_PER_FLUSH:,} a flush): "
            f"worker {self.worker_s * per:.2f} us ({self.round_trips_s * per:.2f} us with its "
            f"round trips), store {self.store_s * per:.2f} us, together "
            f"{(self.round_trips_s + self.store_s) * per:.2f} us of CPU a record; "
            f"{self.commands / (self.records / OPENS_PER_FLUSH):.0f} commands and "
            f"{self.sent_bytes / self.records:.0f} bytes sent a record"
        )


def store_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def send(connection: AbstractConnection, payload: bytes, commands: int) -> None:
    connection.send_packed_command([payload])  # type: ignore[no-untyped-call]
    for _ in range(commands):
        reply = connection.read_response(disable_decoding=True)
        if isinstance(reply, redis.ResponseError):
            raise reply


def worker_cpu_s(pending: list[PendingRecords], passes: int) -> float:
    """The least thread CPU time of `passes` passes turning `pending` into bytes."""
    records = writer()
    for batch in pending[:3]:  # what is done once: caches filled, expressions compiled
        flush_bytes(records, batch)
    spent = []
    for _ in range(passes):
        started = time.thread_time()
        for batch in pending:
            flush_bytes(records, batch)
        spent.append(time.thread_time() - started)
    return min(spent)


def measure(flushes: int, readers: int, passes: int = 3) -> FlushCost:
    pending = list(batches(flushes, readers, WARM_FLUSHES))
    worker_s = worker_cpu_s(pending, passes)
    with (
        tempfile.TemporaryDirectory(prefix="atopen-flush-") as tmp,
        EmbeddedRedis(Path(tmp) / "store", persistent=True) as store,
    ):
        return asyncio.run(_round_trips(store.url, pending, readers, worker_s))


async def _round_trips(
    url: str, pending: list[PendingRecords], readers: int, worker_s: float
) -> FlushCost:
    """`pending` written as the open log writes them (`execute_raw`, on an event loop):
    the store's CPU, and the worker's with its round trips (sending, reading replies)."""
    records = writer()
    commands = sent = 0
    async with aioredis.from_url(url) as client:
        for batch in batches(WARM_FLUSHES, readers):
            await execute_raw(client, records.flush_commands(batch, ()))
        info = redis.Redis.from_url(url)
        before = store_cpu_s(info)
        round_trips_s = 0.0
        for batch in pending:
            started = time.thread_time()
            flush = records.flush_commands(batch, ())
            replies = await execute_raw(client, flush)
            round_trips_s += time.thread_time() - started
            if any(isinstance(reply, Exception) for reply in replies):
                raise RuntimeError(f"the store refused a write: {replies}")
            commands += len(flush)
            sent += len(pack(flush))
        store_s = store_cpu_s(info) - before
        info.close()
    return FlushCost(
        len(pending) * OPENS_PER_FLUSH, worker_s, round_trips_s, store_s, commands, sent
    )


def count_store_instructions(flushes: int, readers: int) -> float | None:
    """The store's instructions per record, counted by callgrind while it runs `flushes`
    batches (after `WARM_FLUSHES`); None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    records = writer()
    with tempfile.TemporaryDirectory(prefix="atopen-flush-store-") as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "store.callgrind"
        port = free_port()
        store = [find_redis_server(), *STORE_OPTIONS, "--port", str(port), "--dir", tmp_name]
        with running(valgrind(store, out), {}, port, tmp / "store.log") as pid:
            client = redis.Redis(HOST, port, socket_timeout=600)
            connection = client.connection_pool.get_connection()
            for pending in batches(WARM_FLUSHES, readers):
                send(connection, *flush_bytes(records, pending))
            callgrind_control("-i", "on", pid)
            for pending in batches(flushes, readers, WARM_FLUSHES):
                send(connection, *flush_bytes(records, pending))
            callgrind_control("-i", "off", pid)
            client.connection_pool.release(connection)
            client.close()
            total = dump_total(pid, out)
    return total / (flushes * OPENS_PER_FLUSH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flushes", type=int, default=200, help="batches measured")
    parser.add_argument(
        "--readers",
        type=int,
        default=READERS,
        help="readers the opens come from in turn: with more than the opens measured, "
        "each reader opens once (each engagement set is new)",
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count the store's instructions too"
    )
    args = parser.parse_args()
    print(measure(args.flushes, args.readers).line())
    if args.instructions:
        counted = max(args.flushes // 10, WARM_FLUSHES)
        store = count_store_instructions(counted, args.readers)
        if store is not None:
            print(
                f"store instructions a record (callgrind, {counted * OPENS_PER_FLUSH:,} "
                f"opens): {store:,.0f}"
            )


if __name__ == "__main__":
    main()
