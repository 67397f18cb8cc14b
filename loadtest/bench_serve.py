"""`make bench` (serving part): atopen under open-spike load, against floors from the same run.

Starts a real store and `atopen serve --workers N` on loopback, seeds a population,
and for each case prints the rate, p50/p99 and the ratio to its floor:
- shared content (a plan-cache hit) vs a bare aiohttp handler answering the same bytes;
- unique personalized renders vs the same images drawn by a minimal Pillow script;
- a countdown under a steady 2,000 opens/s: how many renders per second it costs;
- overload at three times the unique-render capacity: errors, timeouts, p99;
- scaling: N workers vs one, on cache hits (where the workers' event loops are the
  limit) and on unique renders (where one worker's render threads already reach past
  one core: encoding runs without the interpreter lock).
The machine is shared and noisy: read the ratios, not the absolute numbers. Nothing
here fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import redis

from content_sources.redis_keys import inventory_key, profile_key
from loadtest import floors, loadgen
from loadtest.cpu import CpuMeter
from server.datastore.embedded_redis import EmbeddedRedis
from server.signing import Signer

# Throwaway credentials of the throwaway server under test.
SECRET = "bench-secret"  # noqa: S105
TOKEN = "bench-token"  # noqa: S105
HOST = "127.0.0.1"
SHARED_BLOCK = {
    "width": 600,
    "height": 200,
    "variants": [
        {
            "name": "in-stock",
            "when": "inventory['sku-1'].stock > 0",
            "layers": [
                {"type": "fill", "color": "#0b6e4f"},
                {
                    "type": "text",
                    "box": [24, 24, 552, 152],
                    "size": 40,
                    "color": "#ffffff",
                    "text": "Only {{ inventory['sku-1'].stock }} left: order today",
                },
            ],
            "link": "https://shop.example.com/p/1",
        }
    ],
    "default": {
        "layers": [{"type": "fill", "color": "#222222"}],
        "link": "https://shop.example.com/",
    },
}
PERSONAL_BLOCK = {
    "width": 400,
    "height": 100,
    "variants": [
        {
            "name": "named",
            "layers": [
                {"type": "fill", "color": "#ffffff"},
                {
                    "type": "text",
                    "box": [10, 10, 380, 80],
                    "size": 30,
                    "text": "Hello {{ profile.first_name }}",
                },
            ],
            "link": "https://shop.example.com/",
        }
    ],
    "default": {
        "layers": [{"type": "fill", "color": "#ffffff"}],
        "link": "https://shop.example.com/",
    },
}


def countdown_block(until: str, **countdown_style: Any) -> dict[str, Any]:
    """A GIF whose one variant, `timer`, counts down to `until`."""
    return {
        "width": 600,
        "height": 120,
        "format": "gif",
        "variants": [
            {
                "name": "timer",
                "layers": [
                    {"type": "fill", "color": "#1b1f3b"},
                    {
                        "type": "countdown",
                        "box": [20, 10, 560, 100],
                        "until": until,
                        "color": "#ffd43b",
                        **countdown_style,
                    },
                ],
                "link": "https://shop.example.com/sale",
            }
        ],
        "default": {
            "layers": [{"type": "fill", "color": "#1b1f3b"}],
            "link": "https://shop.example.com/",
        },
    }


def renders_of(port: int, block: str) -> float:
    """`atopen_renders_total` for one block, summed over the workers."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    prefix = f'atopen_renders_total{{block="{block}"}}'
    lines = (line for line in text.splitlines() if line.startswith(prefix))
    return sum(float(line.rpartition(" ")[2]) for line in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server under test did not start") from None
            time.sleep(0.1)


class Server(NamedTuple):
    """A server under test: its port and its processes (their children count too)."""

    port: int
    processes: tuple[subprocess.Popen[bytes], ...]

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process in self.processes)


def server_env(
    redis_url: str,
    port: int,
    data_dir: Path,
    secret: str = SECRET,
    token: str = TOKEN,
    **settings: str,
) -> dict[str, str]:
    """This process's environment without its `ATOPEN_*` variables, and atopen's settings
    for a benchmark's server; `settings` are further `ATOPEN_*` variables, and win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    env.update(
        ATOPEN_SECRET=secret,
        ATOPEN_API_TOKEN=token,
        ATOPEN_REDIS_URL=redis_url,
        ATOPEN_PORT=str(port),
        ATOPEN_DATA_DIR=str(data_dir),
        ATOPEN_LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env


@contextmanager
def atopen_server(
    redis_url: str,
    workers: int,
    data_dir: Path,
    secret: str = SECRET,
    token: str = TOKEN,
    **settings: str,
) -> Iterator[Server]:
    """`atopen serve`; `settings` are further `ATOPEN_*` variables, and win over these."""
    port = free_port()
    env = server_env(redis_url, port, data_dir, secret, token, **settings)
    process = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "server", "serve", "--workers", str(workers)], env=env
    )
    try:
        wait_for_port(port, process)
        yield Server(port, (process,))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@contextmanager
def floor_server(body: bytes, workers: int, tmp: Path) -> Iterator[Server]:
    port = free_port()
    body_path = tmp / "floor-body.png"
    body_path.write_bytes(body)
    processes = [
        subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "loadtest.floors", str(port), str(body_path)]
        )
        for _ in range(workers)
    ]
    try:
        wait_for_port(port, processes[0])
        time.sleep(0.5)  # let every process bind before the load starts
        yield Server(port, tuple(processes))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def api(port: int, method: str, path: str, body: object) -> None:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=orjson.dumps(body),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        response.read()


def seed(redis_url: str, recipients: int) -> None:
    with redis.Redis.from_url(redis_url) as store:
        pipe = store.pipeline(transaction=False)
        for i in range(recipients):
            pipe.set(profile_key(f"r{i}"), orjson.dumps({"first_name": f"Reader{i}"}))
        pipe.set(inventory_key("sku-1"), orjson.dumps({"stock": 7}))
        pipe.execute()


def fetch(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as response:
        body: bytes = response.read()
        return body


def closed_loop(port: int, paths: list[str], seconds: float, *, connections: int) -> loadgen.Result:
    return asyncio.run(loadgen.run(HOST, port, paths, duration_s=seconds, connections=connections))


def line(name: str, result: loadgen.Result, floor: float | None, unit: str = "req/s") -> str:
    ratio = f"{result.rate / floor:6.2f}x floor ({floor:,.0f} {unit})" if floor else ""
    errors = (
        result.errors
        + result.timeouts
        + sum(n for status, n in result.statuses.items() if status != 200)
    )
    return (
        f"{name:<28} {result.rate:>9,.0f} req/s  p50 {result.percentile_ms(50):6.1f} ms  "
        f"p99 {result.percentile_ms(99):6.1f} ms  errors {errors:<5} {ratio}"
    )


@dataclass
class Paired:
    """A case and its floor, measured in alternating rounds, with the CPU each request cost
    the processes under test (None where it cannot be measured)."""

    case: loadgen.Result
    floor_rate: float
    case_cpu_us: float | None
    floor_cpu_us: float | None


def shared_content(
    server: Server, one_worker: Server, paths: list[str], args: argparse.Namespace, tmp: Path
) -> tuple[Paired, loadgen.Result, loadgen.Result]:
    """Cache hits against a bare aiohttp handler answering the same bytes (and that floor's
    own figures); and the same hits on a single worker, for scaling."""
    slice_s = args.seconds / args.rounds
    parts: dict[str, list[loadgen.Result]] = {"case": [], "floor": [], "one": []}
    case_cpu = CpuMeter(server.pids)
    with floor_server(fetch(server.port, paths[0]), args.workers, tmp) as floor_at:
        floor_cpu = CpuMeter(floor_at.pids)
        for _ in range(args.rounds):
            hits = partial(closed_loop, server.port, paths, slice_s, connections=64)
            parts["case"].append(case_cpu.measure(hits))
            bare = partial(closed_loop, floor_at.port, ["/"], slice_s, connections=64)
            parts["floor"].append(floor_cpu.measure(bare))
            parts["one"].append(closed_loop(one_worker.port, paths, slice_s, connections=64))
    case = loadgen.Result.combined(parts["case"])
    floor = loadgen.Result.combined(parts["floor"])
    paired = Paired(
        case,
        floor.rate,
        case_cpu.per_request_us(len(case.latencies_s)),
        floor_cpu.per_request_us(len(floor.latencies_s)),
    )
    return paired, floor, loadgen.Result.combined(parts["one"])


def unique_renders(
    server: Server, one_worker: Server, rounds: list[list[str]], args: argparse.Namespace
) -> tuple[Paired, loadgen.Result]:
    """Renders for recipients never seen before, against the Pillow floor; and the same
    opens on a single worker, for scaling."""
    slice_s = args.seconds / args.rounds
    parts, one_worker_parts, pillow = [], [], []
    case_cpu = CpuMeter(server.pids)
    for paths in rounds:
        parts.append(
            case_cpu.measure(partial(closed_loop, server.port, paths, slice_s, connections=16))
        )
        pillow.append(floors.pillow_floor(slice_s, args.workers))
        one_worker_parts.append(closed_loop(one_worker.port, paths, slice_s, connections=16))
    case = loadgen.Result.combined(parts)
    paired = Paired(
        case,
        sum(f.rate for f in pillow) / len(pillow),
        case_cpu.per_request_us(len(case.latencies_s)),
        sum(f.cpu_us_per_image for f in pillow) / len(pillow),
    )
    return paired, loadgen.Result.combined(one_worker_parts)


def measure(args: argparse.Namespace) -> None:
    signer = Signer([SECRET])
    with tempfile.TemporaryDirectory(prefix="atopen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedRedis(tmp / "store", persistent=False) as store:
            seed(store.url, args.recipients)
            shared_paths = [signer.sign_url(f"/i/shared.png?r=r{i}") for i in range(1000)]
            unique_paths = [
                signer.sign_url(f"/i/personal.png?r=r{i}") for i in range(args.recipients)
            ]
            print(
                f"atopen benchmark: {args.workers} workers, {args.seconds:.0f} s per case "
                f"in {args.rounds} rounds alternating with its floor, {os.cpu_count()} CPUs"
            )
            with (
                atopen_server(store.url, args.workers, tmp / "data") as server,
                atopen_server(store.url, 1, tmp / "data1") as one_worker_server,
            ):
                port = server.port
                api(port, "PUT", "/api/v1/blocks/shared", SHARED_BLOCK)
                api(port, "PUT", "/api/v1/blocks/personal", PERSONAL_BLOCK)
                time.sleep(1.5)  # every worker of both servers has the blocks (pub/sub)
                # Cases and their floors alternate in short rounds, so that a noisy
                # neighbour on a shared machine weighs on both sides of each ratio alike.
                shared, bare, one_worker_hits = shared_content(
                    server, one_worker_server, shared_paths, args, tmp
                )
                # Each round of unique renders gets recipients of its own: none is cached.
                unique_rounds = [unique_paths[i :: args.rounds] for i in range(args.rounds)]
                unique, one_worker = unique_renders(server, one_worker_server, unique_rounds, args)
                two_days_away = datetime.now(UTC) + timedelta(days=2)
                timer = countdown_block(two_days_away.isoformat(timespec="seconds"))
                api(port, "PUT", "/api/v1/blocks/countdown", timer)
                time.sleep(1.5)
                timer_paths = [
                    signer.sign_url(f"/i/countdown.gif?r=r{i}") for i in range(args.recipients)
                ]
                before = renders_of(port, "countdown")
                countdown = asyncio.run(
                    loadgen.run(
                        HOST,
                        port,
                        timer_paths,
                        duration_s=args.countdown_seconds,
                        rate=args.countdown_rate,
                    )
                )
                timer_renders = renders_of(port, "countdown") - before
                offered = 3 * unique.case.rate
                overload = asyncio.run(
                    loadgen.run(
                        HOST,
                        port,
                        list(reversed(unique_paths)),
                        duration_s=args.seconds,
                        rate=offered,
                    )
                )

    print(line("shared content (cache hit)", shared.case, shared.floor_rate))
    print(line("  floor: bare aiohttp", bare, None))
    print(cpu_line("open", shared.case_cpu_us, "bare handler", shared.floor_cpu_us))
    print(line("unique personalized renders", unique.case, unique.floor_rate, "images/s"))
    named = unique.case.variants.get("named", 0)
    drawn = named / max(1, sum(unique.case.variants.values()))
    print(f"  {drawn:.0%} drawn for their recipient")
    print(cpu_line("image", unique.case_cpu_us, "Pillow", unique.floor_cpu_us))
    print(line(f"countdown at {args.countdown_rate:,.0f}/s offered", countdown, None))
    print(
        f"  {timer_renders:.0f} renders in {args.countdown_seconds:.0f} s: "
        f"{timer_renders / args.countdown_seconds:.2f} per second for the block"
    )
    print(line(f"overload at {offered:,.0f}/s offered", overload, None))
    defaults = overload.variants.get("default", 0)
    drawn_rate = overload.variants.get("named", 0) / overload.duration_s
    print(
        f"  {defaults / max(1, sum(overload.variants.values())):.0%} answered with the default "
        f"(shed), timeouts {overload.timeouts}, errors {overload.errors}; "
        f"{drawn_rate:,.0f} drawn per second, {drawn_rate / unique.case.rate:.0%} of capacity"
    )
    print(
        f"  the load generator's own loop ran up to {overload.client_lag_ms(100):.0f} ms late "
        f"(p99 {overload.client_lag_ms(99):.0f} ms): the latencies include that"
    )
    print(line("cache hits, 1 worker", one_worker_hits, None))
    print(f"  scaling on cache hits: {scaling(shared.case, one_worker_hits, args.workers)}")
    print(line("unique renders, 1 worker", one_worker, None))
    print(f"  scaling on unique renders: {scaling(unique.case, one_worker, args.workers)}")


def scaling(workers: loadgen.Result, one_worker: loadgen.Result, count: int) -> str:
    """The ratio, and the cores the load generator took from the workers on this machine."""
    return (
        f"{count} workers = {workers.rate / max(one_worker.rate, 1e-9):.2f}x one worker "
        f"(the load generator used {cores(workers):.2f} cores beside {count} workers, "
        f"{cores(one_worker):.2f} beside one)"
    )


def cores(result: loadgen.Result) -> float:
    return result.client_cpu_s / result.duration_s if result.duration_s else 0.0


def cpu_line(unit: str, atopen_us: float | None, floor_name: str, floor_us: float | None) -> str:
    """CPU per request of the server (or script) under test: steadier than a rate on a busy
    machine. Neither the load generator nor the store is counted."""
    if atopen_us is None or floor_us is None:
        return f"  CPU per {unit}: not measurable here (needs /proc)"
    return (
        f"  CPU per {unit}: atopen {atopen_us:,.0f} us, {floor_name} {floor_us:,.0f} us "
        f"({floor_us / atopen_us:.2f}x)"
    )


def rounds_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options of a bench that alternates a case with what it is measured against
    in rounds (this one, and bench_records); `doc` is the bench's module docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--rounds", type=int, default=5, help="how many times the compared runs alternate"
    )
    parser.add_argument("--recipients", type=int, default=20_000)
    return parser


def main() -> None:
    parser = rounds_arguments(__doc__)
    parser.add_argument("--countdown-rate", type=float, default=2000.0)
    parser.add_argument("--countdown-seconds", type=float, default=30.0)
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
