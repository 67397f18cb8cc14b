"""`make bench` (records part): what recording opens costs the open path, and the store.

Two servers on one store, alike but for `ATOPEN_RECORDS_MAX` (on: the default; off: 0),
answer signed opens of a shared block (the cheapest open there is, so the one where a
record weighs most) in alternating rounds. Printed: each one's rate, and the CPU an open
costs the server's processes, the store, and both together, measured in the same
rounds. The servers' figure is the open path's own capacity (a deployment's store runs
on machines of its own, sized by its figure); on a machine whose cores serve the store
too, the capacity is the cores over both, so the ratio of the sums is the capacity with
recording against without. The ratio of the rates says the same on a quiet machine, and
moves with the neighbours on a shared one.
Then the store's memory: the record stream's bytes per record (`MEMORY USAGE`, exact),
scaled to a million, and a reader's engagement set. Last, the flush alone
(`bench_record_flush`): the worker's and the store's CPU per record, which the
neighbours of a shared machine move much less than the servers' rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from content_sources.redis_keys import engagement_key
from loadtest import bench_record_flush, loadgen
from loadtest.bench_serve import (
    HOST,
    SECRET,
    SHARED_BLOCK,
    api,
    atopen_server,
    line,
    rounds_arguments,
    seed,
)
from loadtest.cpu import CpuMeter
from server.datastore.embedded_redis import EmbeddedRedis
from server.records.record_keys import COUNT_KEY, STREAM_KEY
from server.signing import Signer

T = TypeVar("T")
# A reader's own mail app (Apple Mail on an iPhone without MPP): each open is a human one,
# so it writes every record and the engagement set too.
READER_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)


@dataclass
class Meters:
    """The CPU of a server's processes and of the store, measured over the same sections."""

    servers: CpuMeter
    store: CpuMeter

    def measure(self, work: Callable[[], T]) -> T:
        return self.store.measure(lambda: self.servers.measure(work))

    def per_request_us(self, requests: int) -> float | None:
        servers = self.servers.per_request_us(requests)
        store = self.store.per_request_us(requests)
        return None if servers is None or store is None else servers + store


def cost_line(
    name: str,
    on: CpuMeter | Meters,
    off: CpuMeter | Meters,
    answers: tuple[int, int],
    *,
    capacity: bool = False,
) -> str:
    """The CPU an open costs `name` recording and not; with `capacity`, what that makes of
    the capacity of a machine whose cores do nothing else."""
    on_us, off_us = on.per_request_us(answers[0]), off.per_request_us(answers[1])
    if not on_us or not off_us:
        return f"CPU per open ({name}): not measured here"
    text = (
        f"CPU per open ({name}): {on_us:.1f} us recording, {off_us:.1f} us not "
        f"({(on_us / off_us - 1) * 100:+.1f}%)"
    )
    if capacity:
        text += f": capacity with recording {off_us / on_us:.3f}x without"
    return text


def opens(port: int, paths: list[str], seconds: float) -> loadgen.Result:
    return asyncio.run(
        loadgen.run(HOST, port, paths, duration_s=seconds, connections=64, user_agent=READER_UA)
    )


def measure(args: argparse.Namespace) -> None:
    signer = Signer([SECRET])
    paths = [signer.sign_url(f"/i/shared.png?r=r{i}") for i in range(args.recipients)]
    slice_s = args.seconds / args.rounds
    with tempfile.TemporaryDirectory(prefix="atopen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedRedis(tmp / "store", persistent=False) as store:
            seed(store.url, 0)
            print(
                f"records benchmark: {args.workers} workers, {args.seconds:.0f} s per case in "
                f"{args.rounds} rounds, {os.cpu_count()} CPUs"
            )
            with (
                atopen_server(store.url, args.workers, tmp / "on") as recording,
                atopen_server(store.url, args.workers, tmp / "off", ATOPEN_RECORDS_MAX="0") as off,
            ):
                api(recording.port, "PUT", "/api/v1/blocks/shared", SHARED_BLOCK)
                time.sleep(1.5)  # every worker of both servers has the block
                for server in (recording, off):  # warm: the render is cached in each worker
                    opens(server.port, paths[:200], 0.5)
                store_pid = (store.pid or 0,)
                on = Meters(CpuMeter(recording.pids), CpuMeter(store_pid))
                not_on = Meters(CpuMeter(off.pids), CpuMeter(store_pid))
                on_parts, off_parts = [], []
                for _ in range(args.rounds):
                    on_parts.append(on.measure(lambda: opens(recording.port, paths, slice_s)))
                    off_parts.append(not_on.measure(lambda: opens(off.port, paths, slice_s)))
                time.sleep(0.5)  # the last flush
            with_records = loadgen.Result.combined(on_parts)
            without = loadgen.Result.combined(off_parts)
            print(line("shared opens, recording", with_records, None))
            print(line("shared opens, not recording", without, None))
            answers = (len(with_records.latencies_s), len(without.latencies_s))
            for name, on_meter, off_meter in (
                ("the servers", on.servers, not_on.servers),
                ("the store", on.store, not_on.store),
            ):
                print(cost_line(name, on_meter, off_meter, answers))
            print(cost_line("together, on one machine", on, not_on, answers, capacity=True))
            print(f"rate with recording: {with_records.rate / without.rate:.3f}x without")
            with redis.Redis.from_url(store.url) as client:
                count = int(client.get(COUNT_KEY) or 0)
                entries = client.xlen(STREAM_KEY)
                stream_bytes = client.memory_usage(STREAM_KEY, samples=0) or 0
                engagement = client.memory_usage(engagement_key("r0"), samples=0) or 0
                engagement_entries = client.zcard(engagement_key("r0"))
            if count:
                print(
                    f"store memory: {count:,} records in {stream_bytes / 1e6:.1f} MB, "
                    f"{stream_bytes / count:.0f} B a record, "
                    f"{stream_bytes / count:.0f} MB a million records "
                    f"({entries:,} stream entries); "
                    f"one reader's engagement set of {engagement_entries} opens: "
                    f"{engagement:,} B"
                )
    print(bench_record_flush.measure(100, args.recipients).line())


def main() -> None:
    measure(rounds_arguments(__doc__).parse_args())


if __name__ == "__main__":
    main()
