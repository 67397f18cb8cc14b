"""`make bench` (instructions part): what a shared-content open costs, in instructions.

A cache hit's time moves with a shared machine's neighbours; the instructions it runs do
not. This starts the embedded store and ONE atopen worker under callgrind with counting
off, registers a block whose image is the same for every reader (a render-cache hit),
warms it up with `wrk`, counts during a fixed `wrk` run through the signed URLs of
distinct readers, and divides by the answers. Then the same for a bare aiohttp handler
answering the same bytes (`loadtest/floors.py`). It prints both and their ratio.

It counts a refused open the same way: what an open costs that the render queue has no
room for, answered at once with the block's pre-rendered default (the most numerous
answer of an overloaded server). The block is drawn per recipient and reads live data
from a listener that never answers; the queue has one place (`ATOPEN_RENDER_QUEUE=0`,
one render thread), which the first open takes and holds while it waits for that data,
so every open after it is refused.

Under callgrind a process runs about fifty times slower while its timers keep wall-clock
time: the worker here runs with its periodic work (the open log's flush, the metrics'
flush, the loop-lag timer) and the inventory's shared reads stretched by that factor, so
that each open carries the same share of them as at full speed. Nothing here fails on
counts; it prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest.bench_serve import (
    HOST,
    PERSONAL_BLOCK,
    SECRET,
    SHARED_BLOCK,
    api,
    fetch,
    free_port,
    seed,
    server_env,
    wait_for_port,
)
from server.datastore.embedded_redis import EmbeddedRedis
from server.signing import Signer

# About how much slower a process runs under callgrind than at full speed.
SLOWDOWN = 50
# What `ATOPEN_INVENTORY_MAX_AGE_MS` (100 ms) becomes under callgrind.
INVENTORY_MAX_AGE_MS = 100 * SLOWDOWN
BLOCK = "shared"
SHARED_VARIANT = str(SHARED_BLOCK["variants"][0]["name"])  # type: ignore[index]
REFUSED_BLOCK = "refused"
# A worker started under callgrind: `slowed_worker` below.
SLOWED_WORKER = (sys.executable, "-m", "loadtest.bench_instructions", "--slowed-worker")
# How long the open let in waits for the live data that never comes: longer than a run.
HELD_MS = 30_000
# A path per reader: more than a counted run sends under callgrind, so none repeats.
READERS = 20_000
CONNECTIONS = 8
# The refused opens' runs (and their bare handler's): a connection whose open is refused
# is not read for `ATOPEN_REFUSAL_PAUSE_MS` (250 ms), so 8 would send 32 opens a second,
# and the worker's periodic work would be spread over too few of them. 512 keep it busy.
REFUSED_CONNECTIONS = 512
# One thread: wrk's `done()` reads this thread's counts. It sends paths in turn, counts
# the answers that are 200 with the shared variant, and writes the counts to a file.
WRK_SCRIPT = """
local paths, n, out = {}, 0, os.getenv("BENCH_OUT")
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
answers, shared = 0, 0
function request()
  n = n + 1
  return wrk.format("GET", paths[(n - 1) % #paths + 1])
end
function response(status, headers, body)
  answers = answers + 1
  if status == 200 and headers["X-Atopen-Variant"] == os.getenv("BENCH_VARIANT") then
    shared = shared + 1
  end
end
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function done(summary, latency, requests)
  local f = assert(io.open(out, "w"))
  f:write(threads[1]:get("answers"), " ", threads[1]:get("shared"), " ",
          summary.requests, "\\n")
  f:close()
end
"""


@dataclass(frozen=True)
class Count:
    """Instructions counted over one wrk run, and the answers of that run."""

    instructions: int
    answers: int
    shared: int  # answers that were the shared variant, 200 (the floor has none)

    @property
    def per_request(self) -> float:
        return self.instructions / max(self.answers, 1)


def slowed_worker() -> int:
    """`python -m server worker`, its timers stretched by `SLOWDOWN` (see the docstring)."""
    from server import metrics
    from server.opens import loop_lag
    from server.process.cli import main
    from server.records import open_log

    open_log.FLUSH_INTERVAL_S *= SLOWDOWN
    metrics.FLUSH_INTERVAL_S *= SLOWDOWN
    loop_lag.INTERVAL_S *= SLOWDOWN
    return main(["worker"])


def valgrind(command: Sequence[str], out_file: Path) -> list[str]:
    """`command` under callgrind, counting nothing until told; dumps of an earlier run
    with the same name are removed first."""
    for old in (out_file, *out_file.parent.glob(out_file.name + ".*")):
        old.unlink(missing_ok=True)
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        *command,
    ]


@contextmanager
def running(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    """`command` started, once it listens on `port`; its output goes to `log`."""
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own command
            command, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_for_port(port, process)
        except RuntimeError:
            process.kill()
            process.wait()
            raise RuntimeError(f"{command} did not start: {log.read_text()[-2000:]}") from None
        yield process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_wrk(
    port: int,
    paths_file: Path,
    tmp: Path,
    seconds: float,
    variant: str = SHARED_VARIANT,
    connections: int = CONNECTIONS,
) -> tuple[int, int]:
    """One wrk run: the answers, and those that were `variant`."""
    script, out = tmp / "paths.lua", tmp / "wrk.out"
    script.write_text(WRK_SCRIPT)
    out.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_PATHS": str(paths_file),
        "BENCH_OUT": str(out),
        "BENCH_VARIANT": variant,
    }
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout=30s",
        f"--script={script}",
        f"http://{HOST}:{port}/",
    ]
    done = subprocess.run(  # noqa: S603 - our own command
        command, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    answers, shared, _ = (int(field) for field in out.read_text().split())
    return answers, shared


def count(
    pid: int,
    port: int,
    paths_file: Path,
    out_file: Path,
    args: argparse.Namespace,
    variant: str = SHARED_VARIANT,
    connections: int = CONNECTIONS,
) -> Count:
    """Warm up, then count the instructions of a fixed wrk run."""
    tmp = paths_file.parent
    run_wrk(port, paths_file, tmp, args.warmup, variant, connections)
    callgrind_control("-i", "on", pid)
    answers, matched = run_wrk(port, paths_file, tmp, args.seconds, variant, connections)
    callgrind_control("-i", "off", pid)
    return Count(dump_total(pid, out_file), answers, matched)


def callgrind_control(*args: str | int) -> None:
    command = ["callgrind_control", *(str(arg) for arg in args)]
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603 - our own command


def dump_total(pid: int, out_file: Path) -> int:
    """Have callgrind write what it counted so far; its total instructions."""
    before = set(out_file.parent.glob(out_file.name + ".*"))
    callgrind_control("-d", pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(out_file.parent.glob(out_file.name + ".*")) - before:
            match = re.search(r"^totals: (\d+)", dump.read_text(), re.MULTILINE)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump for process {pid}")


def refused_block(data_url: str) -> dict[str, object]:
    """A block drawn per recipient whose variant also reads `data_url`, with the shared
    block's size and default (so the same floor answers the same bytes)."""
    variant = dict(PERSONAL_BLOCK["variants"][0])  # type: ignore[index]
    variant["layers"] = [
        *variant["layers"][:1],
        {**variant["layers"][1], "text": "Hello {{ profile.first_name }} {{ data.held }}"},
    ]
    return {
        **SHARED_BLOCK,
        "variants": [variant],
        "data": {"held": {"url": data_url, "timeout_ms": HELD_MS, "ttl_s": 0}},
    }


def worker_env(store_url: str, port: int, data_dir: Path, **settings: str) -> dict[str, str]:
    return server_env(
        store_url,
        port,
        data_dir,
        # The loop-lag timer sees the slowdown as lag; no open may fall back for it.
        ATOPEN_RENDER_DEADLINE_MS="60000",
        ATOPEN_INVENTORY_MAX_AGE_MS=str(INVENTORY_MAX_AGE_MS),
        **settings,
    )


def signed_paths(signer: Signer, block: str, path: Path) -> Path:
    path.write_text(
        "".join(signer.sign_url(f"/i/{block}.png?r=r{i}") + "\n" for i in range(READERS))
    )
    return path


def count_shared(
    store_url: str, paths_file: Path, out_file: Path, args: argparse.Namespace, **settings: str
) -> tuple[Count, bytes]:
    """A worker answering the shared block's opens, counted; and the bytes it answers."""
    tmp = paths_file.parent
    port = free_port()
    env = worker_env(store_url, port, tmp / out_file.stem, **settings)
    with running(valgrind(SLOWED_WORKER, out_file), env, port, tmp / f"{out_file.stem}.log") as pid:
        api(port, "PUT", f"/api/v1/blocks/{BLOCK}", SHARED_BLOCK)
        body = fetch(port, Signer([SECRET]).sign_url(f"/i/{BLOCK}.png?r=r0"))
        return count(pid, port, paths_file, out_file, args), body


def count_refused(
    store_url: str, paths_file: Path, out_file: Path, args: argparse.Namespace
) -> tuple[Count, bytes]:
    """A worker refusing every open but the first (see the docstring), counted; and the
    default's bytes it answers."""
    tmp = paths_file.parent
    with socket.create_server((HOST, 0)) as never_answers:
        port = free_port()
        env = worker_env(
            store_url,
            port,
            tmp / out_file.stem,
            ATOPEN_RENDER_THREADS="1",
            ATOPEN_RENDER_QUEUE="0",
            ATOPEN_FETCH_ALLOW=f"{HOST}/32",
        )
        block = refused_block(f"http://{HOST}:{never_answers.getsockname()[1]}/")
        with running(valgrind(SLOWED_WORKER, out_file), env, port, tmp / "refused.log") as pid:
            api(port, "PUT", f"/api/v1/blocks/{REFUSED_BLOCK}", block)
            default = fetch(port, f"/i/{REFUSED_BLOCK}.png")  # unsigned: the default
            counted = count(pid, port, paths_file, out_file, args, "default", REFUSED_CONNECTIONS)
            return counted, default


def count_floor(
    body: bytes,
    paths_file: Path,
    out_file: Path,
    args: argparse.Namespace,
    connections: int = CONNECTIONS,
) -> Count:
    """The bare aiohttp handler answering `body`, counted like the worker."""
    tmp = paths_file.parent
    body_path = tmp / "body.png"
    body_path.write_bytes(body)
    port = free_port()
    floor = [sys.executable, "-m", "loadtest.floors", str(port), str(body_path)]
    with running(valgrind(floor, out_file), dict(os.environ), port, tmp / "floor.log") as pid:
        return count(pid, port, paths_file, out_file, args, connections=connections)


def measure(args: argparse.Namespace) -> None:
    for tool in ("valgrind", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: run `sh loadtest/install_tools.sh`")
    signer = Signer([SECRET])
    out_dir = Path(args.out) if args.out else None
    with tempfile.TemporaryDirectory(prefix="atopen-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        dumps = out_dir or tmp
        dumps.mkdir(parents=True, exist_ok=True)
        shared_paths = signed_paths(signer, BLOCK, tmp / "shared-paths.txt")
        refused_paths = signed_paths(signer, REFUSED_BLOCK, tmp / "refused-paths.txt")
        with EmbeddedRedis(tmp / "store", persistent=False) as store:
            seed(store.url, READERS)
            atopen, body = count_shared(store.url, shared_paths, dumps / "atopen.callgrind", args)
            unrecorded, _ = count_shared(
                store.url,
                shared_paths,
                dumps / "unrecorded.callgrind",
                args,
                ATOPEN_RECORDS_MAX="0",
            )
            refused, default = count_refused(
                store.url, refused_paths, dumps / "refused.callgrind", args
            )
        bare = count_floor(body, shared_paths, dumps / "floor.callgrind", args)
        bare_default = count_floor(
            default, shared_paths, dumps / "floor-default.callgrind", args, REFUSED_CONNECTIONS
        )
    print(
        f"instructions per request (callgrind, one process, {args.seconds:g} s of wrk "
        f"-c{CONNECTIONS}):"
    )
    print(
        f"  shared open (render cache hit) {atopen.per_request:>10,.0f}  "
        f"({atopen.answers:,} answers, {atopen.shared:,} the shared variant)"
    )
    print(
        f"  bare aiohttp, same bytes       {bare.per_request:>10,.0f}  ({bare.answers:,} answers)"
    )
    print(f"  ratio {atopen.per_request / bare.per_request:.2f}x")
    print(
        f"  shared open, recording off     {unrecorded.per_request:>10,.0f}  "
        f"({unrecorded.answers:,} answers; ATOPEN_RECORDS_MAX=0, ratio "
        f"{unrecorded.per_request / bare.per_request:.2f}x: the record costs "
        f"{atopen.per_request / unrecorded.per_request - 1:+.1%})"
    )
    print(
        f"  refused open (the default; wrk -c{REFUSED_CONNECTIONS}, each refused connection "
        "paused 250 ms)"
    )
    print(
        f"  refused open                   {refused.per_request:>10,.0f}  "
        f"({refused.answers:,} answers, {refused.shared:,} the default)"
    )
    print(
        f"  bare aiohttp, same bytes       {bare_default.per_request:>10,.0f}  "
        f"({bare_default.answers:,} answers)"
    )
    print(f"  ratio {refused.per_request / bare_default.per_request:.2f}x")
    if out_dir:
        print(f"  per function: callgrind_annotate {out_dir}/atopen.callgrind.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the counted run")
    parser.add_argument("--warmup", type=float, default=5.0, help="wrk run before counting")
    parser.add_argument("--out", help="keep callgrind's dumps in this directory")
    parser.add_argument("--slowed-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slowed_worker:
        raise SystemExit(slowed_worker())
    measure(args)


if __name__ == "__main__":
    main()
