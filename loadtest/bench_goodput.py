"""`make bench` (goodput part): how many readers get their own image as the load grows.

A rate counts answers, and an overloaded atopen answers fast with the default image: a
reader who opens the email and sees the default got an answer, not the content meant
for them. This prints a table of goodput: the readers per second who got their OWN
variant (`X-Atopen-Variant` is the personalised variant's name, not "default").

`atopen serve` runs on the embedded store with one personalised block, and every
request is a different reader with a profile, so that every open draws its own image and
none is a render-cache hit. `wrk` sends the requests, driven by `goodput.lua`:
- closed loop at 1 to 1,024 connections (each sends again when answered): the capacity
  is the most right images per second any of these rows achieved;
- open loop at 0.5x to 10x that capacity: requests start on a schedule whatever the
  answers do, as opens arrive in real life, over many connections so that one is free
  when a send is due. The arrival rate achieved is printed beside the target, with the
  share of sends that went out late because no connection was free.

Where the machine has two CPUs or more, `wrk` runs on a CPU of its own and the server
(its workers, one per CPU left, and the store) on the others, as in production, where
the opens come from elsewhere. Sharing the server's CPUs, the load generator is slowed
by the very load it measures, and hides what a client that asks again at once does to
the server: on 2 CPUs shared, a closed loop of 1,024 connections sent 1,900 opens a
second; with `wrk` on its own CPU, 10,000. `--generator-cpus 0` shares them all.
Beside each row: the CPU `wrk` took and the server's. Nothing here fails on time; the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from content_sources.redis_keys import profile_key
from loadtest.bench_serve import (
    HOST,
    PERSONAL_BLOCK,
    SECRET,
    Server,
    api,
    atopen_server,
    fetch,
    floor_server,
)
from loadtest.cpu import tree_cpu_s
from server.datastore.embedded_redis import EmbeddedRedis
from server.settings import Settings
from server.signing import Signer

CLOSED_CONNECTIONS = (1, 8, 32, 128, 512, 1024)
OPEN_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 10.0)
BLOCK = "goodput"
RIGHT_VARIANT = str(PERSONAL_BLOCK["variants"][0]["name"])  # type: ignore[index]
# A mail client gives up on an image long before this; an answer later than it is not a
# reader served.
TIMEOUT_S = 5
LUA_SCRIPT = Path(__file__).with_name("goodput.lua")
# Readers handed to a closed-loop row, per second of it: default answers of an
# overloaded server come fast, and a reader sent twice would be a render-cache hit.
# A row that runs out sends some again and says so.
CLOSED_READERS_PER_S = 16_000
SEED_CHUNK = 5_000
# A connection of the open loop is busy for one answer at a time, and wrk keeps a timer
# for each idle one that it walks at every event: idle connections cost the load
# generator CPU that the server shares. Each row gets what Little's law says it holds,
# with room: the admitted opens, at most the capacity's worth a second, each answered
# within the render deadline; the refused ones, answered at once, or within the deadline
# when refused only as their turn came, and then not read for the refusal pause (wrk
# sends on such a connection as on any free one, and that send waits out the pause). A
# row short of connections shows as late sends.
REFUSED_HOLD_S = 0.15
SPARE_CONNECTIONS = 256
MAX_OPEN_CONNECTIONS = 6144


@dataclass(frozen=True)
class Outcome:
    """What goodput.lua counted over one wrk run."""

    duration_s: float
    threads: int
    sent: int
    answered: int
    right: int
    default: int
    other: int
    non200: int
    errors: int  # socket errors: connect, read, write
    timeouts_answered: int  # answered, but after TIMEOUT_S
    timeouts_pending: int  # still waiting at the end, for longer than TIMEOUT_S
    late: int  # open loop: sends that went out well after their due time
    repeats: int  # sends of a reader already sent in this run
    unmatched: int  # answers without the request number they were sent with
    max_thread_sent: int
    right_latencies_us: tuple[float, ...]
    default_latencies_us: tuple[float, ...]

    @property
    def sent_rate(self) -> float:
        return self.sent / self.duration_s

    @property
    def answered_rate(self) -> float:
        return self.answered / self.duration_s

    @property
    def right_rate(self) -> float:
        return self.right / self.duration_s

    @property
    def timeouts(self) -> int:
        return self.timeouts_answered + self.timeouts_pending

    @property
    def share_right(self) -> float:
        """Right images among the opens that ended: answered, failed, or waited past the
        timeout (requests still young in flight when the run stopped count nowhere)."""
        ended = self.answered + self.errors + self.timeouts_pending
        return self.right / ended if ended else 0.0

    def right_ms(self, percentile: float) -> float:
        """A percentile of the right images' latency (send to answer), in milliseconds."""
        return _percentile_ms(self.right_latencies_us, percentile)

    def default_ms(self, percentile: float) -> float:
        """A percentile of the defaults' latency: what cannot be drawn in time is meant to
        get the default at once, not at the end of its deadline."""
        return _percentile_ms(self.default_latencies_us, percentile)

    def lines_used(self, available: int) -> int:
        """How many lines of the paths file the run used (thread k sends lines k, k+n, ...)."""
        return min(available, self.threads * self.max_thread_sent)


def _percentile_ms(latencies_us: Sequence[float], percentile: float) -> float:
    if not latencies_us:
        return math.nan
    ordered = sorted(latencies_us)
    index = min(len(ordered) - 1, int(percentile / 100 * len(ordered)))
    return ordered[index] / 1000


def parse_outcome(text: str) -> Outcome:
    """The result file goodput.lua's done() writes: `name=value` pairs on the first line,
    then the latencies in microseconds, one a line: the right images' bare, the
    defaults' after a `d`."""
    first, _, rest = text.partition("\n")
    latencies = rest.split()
    pairs = (pair.partition("=") for pair in first.split())
    fields = {name: int(float(value)) for name, _, value in pairs}
    return Outcome(
        duration_s=fields["duration_us"] / 1e6,
        threads=fields["threads"],
        sent=fields["sent"],
        answered=fields["answered"],
        right=fields["right"],
        default=fields["default"],
        other=fields["other"],
        non200=fields["non200"],
        errors=fields["connect_errors"] + fields["read_errors"] + fields["write_errors"],
        timeouts_answered=fields["timeouts_answered"],
        timeouts_pending=fields["timeouts_pending"],
        late=fields["late"],
        repeats=fields["repeats"],
        unmatched=fields["unmatched"],
        max_thread_sent=fields["max_thread_sent"],
        right_latencies_us=tuple(float(line) for line in latencies if line[0] != "d"),
        default_latencies_us=tuple(float(line[1:]) for line in latencies if line[0] == "d"),
    )


@dataclass(frozen=True)
class Row:
    """One row of the table: a load, what it got, and who used the CPU."""

    label: str
    target_rate: float | None  # open loop: the requests/s asked for; closed loop: None
    outcome: Outcome
    wrk_cores: float
    atopen_cores: float | None


def open_connections(
    rate: float, capacity_rate: float, deadline_s: float, pause_s: float = 0.0
) -> int:
    """Connections enough for an open-loop row of `rate` sends a second (see
    REFUSED_HOLD_S), in whole multiples of the spare ones."""
    refused_hold_s = REFUSED_HOLD_S + pause_s
    held = min(rate, capacity_rate) * deadline_s + rate * refused_hold_s + SPARE_CONNECTIONS
    return min(MAX_OPEN_CONNECTIONS, math.ceil(held / SPARE_CONNECTIONS) * SPARE_CONNECTIONS)


def capacity(rows: Sequence[Row]) -> float:
    """The most right images per second any closed-loop row achieved."""
    return max((row.outcome.right_rate for row in rows if row.target_rate is None), default=0.0)


HEADER = (
    f"{'load':<22} {'offered/s':>9} {'sent/s':>8} {'late':>6} {'answered/s':>10} "
    f"{'right/s':>8} {'right':>6} {'p50 right':>10} {'p99 right':>10} "
    f"{'p50 default':>11} {'p99 default':>11} "
    f"{'non-200':>7} "
    f"{'errors':>6} {'timeouts':>8} {'wrk CPU':>7} {'atopen CPU':>10}"
)


def format_row(row: Row) -> str:
    out = row.outcome
    offered = "-" if row.target_rate is None else f"{row.target_rate:,.0f}"
    late = "-" if row.target_rate is None else f"{out.late / max(out.sent, 1):.1%}"
    atopen = "?" if row.atopen_cores is None else f"{row.atopen_cores:.2f}"
    line = (
        f"{row.label:<22} {offered:>9} {out.sent_rate:>8,.0f} {late:>6} "
        f"{out.answered_rate:>10,.0f} {out.right_rate:>8,.0f} {out.share_right:>6.1%} "
        f"{_ms(out.right_ms(50)):>10} {_ms(out.right_ms(99)):>10} "
        f"{_ms(out.default_ms(50)):>11} {_ms(out.default_ms(99)):>11} {out.non200:>7} "
        f"{out.errors:>6} {out.timeouts:>8} {row.wrk_cores:>7.2f} {atopen:>10}"
    )
    notes = []
    if out.repeats:
        notes.append(f"{out.repeats} sends repeated a reader (ran out of distinct ones)")
    if out.unmatched:
        notes.append(f"{out.unmatched} answers without their request number")
    if out.other:
        notes.append(f"{out.other} answers with another variant")
    return line + "".join(f"\n  {note}" for note in notes)


def ceiling(capacity_rate: float, bare_rate: float, arrivals: float) -> float:
    """The most right images per second possible when `arrivals` opens come each second
    and each one not drawn is answered at once at the cost of a bare handler's answer.

    Drawing one takes 1/capacity of the box and answering one with the default at least
    1/bare, so right/capacity + (arrivals - right)/bare <= 1. Past `bare` arrivals a
    second, the box cannot even answer them all: no share of capacity is reachable."""
    if arrivals <= capacity_rate:
        return arrivals
    room = 1 - arrivals / bare_rate
    return max(0.0, capacity_rate * room / (1 - capacity_rate / bare_rate))


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


class Readers:
    """Distinct readers with profiles, each handed to one request only: their signed paths,
    signed and seeded in the store as rows need them."""

    def __init__(self, signer: Signer, redis_url: str) -> None:
        self._signer = signer
        self._redis_url = redis_url
        self._paths: list[str] = []
        self._next = 0

    def take(self, count: int) -> list[str]:
        """The next `count` unused readers' paths; `used` says how many a row consumed."""
        self._grow(self._next + count)
        return self._paths[self._next : self._next + count]

    def used(self, count: int) -> None:
        self._next += count

    def _grow(self, size: int) -> None:
        start = len(self._paths)
        if size <= start:
            return
        with redis.Redis.from_url(self._redis_url) as store:
            for chunk in range(start, size, SEED_CHUNK):
                ids = range(chunk, min(size, chunk + SEED_CHUNK))
                # A first name per reader makes each one's image different from all others.
                store.mset(
                    {profile_key(f"g{i}"): orjson.dumps({"first_name": f"G{i}"}) for i in ids}
                )
        self._paths.extend(
            self._signer.sign_url(f"/i/{BLOCK}.png?r=g{i}") for i in range(start, size)
        )


@dataclass(frozen=True)
class Layout:
    """The CPUs the server (with its store) and the load generator run on; None: all of
    this process's, shared."""

    server: frozenset[int] | None
    generator: frozenset[int] | None

    @classmethod
    def split(cls, generator_cpus: int) -> Layout:
        """The last `generator_cpus` of this process's CPUs for the load generator and the
        rest for the server, when at least one is left for it; else all shared."""
        usable = sorted(os.sched_getaffinity(0))
        if generator_cpus <= 0 or len(usable) <= generator_cpus:
            return cls(None, None)
        return cls(frozenset(usable[:-generator_cpus]), frozenset(usable[-generator_cpus:]))

    def server_cpu_count(self) -> int:
        return len(self.server if self.server is not None else os.sched_getaffinity(0))

    def describe(self) -> str:
        if self.server is None or self.generator is None:
            return f"server and wrk share {self.server_cpu_count()} CPUs"
        return f"server on CPUs {sorted(self.server)}, wrk on CPUs {sorted(self.generator)}"


@dataclass
class Bench:
    server: Server
    readers: Readers
    tmp: Path
    seconds: int
    deadline_s: float
    open_connections: int | None = None  # a fixed count for every open-loop row
    generator_cpus: frozenset[int] | None = None  # where wrk runs (None: anywhere)
    pause_s: float = 0.0  # the server's refusal pause (ATOPEN_REFUSAL_PAUSE_MS)

    def closed(self, connections: int) -> Row:
        return self._row(
            f"closed {connections:>5} conn",
            connections,
            readers=CLOSED_READERS_PER_S * self.seconds,
            rate=None,
        )

    def open(self, multiple: float, capacity_rate: float) -> Row:
        rate = max(multiple * capacity_rate, 1.0)
        # The sends the schedule makes, and a margin for the schedule's start.
        connections = self.open_connections or open_connections(
            rate, capacity_rate, self.deadline_s, self.pause_s
        )
        readers = math.ceil(rate * self.seconds * 1.1) + connections
        label = f"open {multiple:>4g}x {connections} conn"
        return self._row(label, connections, readers=readers, rate=rate)

    def _row(self, label: str, connections: int, *, readers: int, rate: float | None) -> Row:
        paths = self.readers.take(readers)
        paths_file = self.tmp / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        outcome, wrk_cores, atopen_cores = self.load(self.server, paths_file, connections, rate)
        self.readers.used(outcome.lines_used(len(paths)))
        settle(self.server)
        return Row(label, rate, outcome, wrk_cores, atopen_cores)

    def load(
        self, server: Server, paths_file: Path, connections: int, rate: float | None
    ) -> tuple[Outcome, float, float | None]:
        """One row's wrk run against `server`: what goodput.lua counted, the cores wrk took,
        and the cores `server` took (None where /proc cannot tell)."""
        cpu_before = tree_cpu_s(server.pids)
        outcome, wrk_cores, wall_s = run_wrk(
            server.port,
            paths_file,
            self.tmp / "out.txt",
            self.seconds,
            connections,
            rate,
            self.generator_cpus,
        )
        cpu_after = tree_cpu_s(server.pids)
        if cpu_before is None or cpu_after is None:
            return outcome, wrk_cores, None
        return outcome, wrk_cores, (cpu_after - cpu_before) / wall_s


def run_wrk(
    port: int,
    paths_file: Path,
    out_file: Path,
    seconds: int,
    connections: int,
    rate: float | None,
    cpus: frozenset[int] | None = None,
) -> tuple[Outcome, float, float]:
    """One wrk run (on `cpus` if given): what goodput.lua counted, the cores wrk took, the
    run's wall time."""
    threads = 1 if connections == 1 else 2
    env = {
        **os.environ,
        "GOODPUT_PATHS": str(paths_file),
        "GOODPUT_OUT": str(out_file),
        "GOODPUT_RIGHT": RIGHT_VARIANT,
        "GOODPUT_THREADS": str(threads),
        "GOODPUT_TIMEOUT_MS": str(TIMEOUT_S * 1000),
    }
    if rate is not None:
        env["GOODPUT_RATE"] = f"{rate:.3f}"
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={TIMEOUT_S}s",
        f"--script={LUA_SCRIPT}",
        f"http://{HOST}:{port}/",
    ]
    out_file.unlink(missing_ok=True)
    # wrk is the only child that ends in here: the children's usage grows by its own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own command
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    wall_s = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    used_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return parse_outcome(out_file.read_text()), used_s / wall_s, wall_s


class BareHandler:
    """What a refusal costs at the least: `floor`, a bare aiohttp handler answering the
    block's default image with as many processes as the server, on its CPUs, loaded by
    the same wrk, closed loop and at each open-loop row's arrival rate."""

    # Enough for answers that leave at once, at any row's rate.
    OPEN_CONNECTIONS = 256

    def __init__(self, floor: Server, bench: Bench, cpus: int) -> None:
        self._floor = floor
        self._bench = bench
        self._cpus = cpus
        self._paths = bench.tmp / "bare-paths.txt"
        self._paths.write_text("/\n" * 64)  # every wrk thread takes lines of its own

    def closed_rate(self) -> float:
        """Answers per second in a closed loop of 128 connections, the requests arriving
        several to a turn of the event loop: the cheapest an answer gets."""
        outcome, _, _ = self._bench.load(self._floor, self._paths, 128, None)
        return outcome.answered_rate

    def open_rate(self, arrivals: float) -> float:
        """The answers per second the server's CPUs would give at the CPU each answer took
        when `arrivals` came a second on a schedule, one by one: each wakes the process,
        and costs more than in a closed loop (the more so the fewer come)."""
        outcome, _, cores = self._bench.load(
            self._floor, self._paths, self.OPEN_CONNECTIONS, arrivals
        )
        if not cores or not outcome.answered_rate:
            return math.inf
        return self._cpus * outcome.answered_rate / cores


def settle(server: Server, *, idle_cores: float = 0.15, longest_s: float = 10.0) -> None:
    """Wait until the server has finished what the last row queued, so that it does not
    weigh on the next."""
    deadline = time.monotonic() + longest_s
    last = tree_cpu_s(server.pids)
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_s(server.pids)
        if now is None or (now - last) / 0.5 < idle_cores:
            return
        last = now


def raise_open_files(needed: int) -> None:
    """Every connection is a file on both ends, and the server started here inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # only with the privilege to raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            print(f"  open files are limited to {hard}: rows with many connections may fail")
            needed = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def measure(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `sh loadtest/install_tools.sh` (make bench does)")
    # Two ends per connection in this machine, and room for the store and the workers.
    most_connections = args.open_connections or MAX_OPEN_CONNECTIONS
    raise_open_files(2 * max(most_connections, *CLOSED_CONNECTIONS) + 4096)
    defaults = Settings()
    deadline_s = defaults.render_deadline_ms / 1000
    signer = Signer([SECRET])
    layout = Layout.split(args.generator_cpus)
    if layout.server is not None:
        # The store and the server started below, and the bare handler, inherit it.
        os.sched_setaffinity(0, layout.server)
    workers = args.workers or layout.server_cpu_count()
    with tempfile.TemporaryDirectory(prefix="atopen-goodput-") as tmp_name:
        tmp = Path(tmp_name)
        with (
            EmbeddedRedis(tmp / "store", persistent=False) as store,
            atopen_server(store.url, workers, tmp / "data") as server,
        ):
            api(server.port, "PUT", f"/api/v1/blocks/{BLOCK}", PERSONAL_BLOCK)
            time.sleep(1.5)  # every worker has the block (pub/sub)
            bench = Bench(
                server,
                Readers(signer, store.url),
                tmp,
                args.seconds,
                deadline_s,
                args.open_connections,
                layout.generator,
                defaults.refusal_pause_ms / 1000,
            )
            print(
                f"goodput: {workers} workers, every request a different reader, "
                f'{args.seconds} s a row; right = variant "{RIGHT_VARIANT}", '
                f"timeout {TIMEOUT_S} s; {layout.describe()}"
            )
            bench.closed(32)  # warm-up: fonts, templates and connections, not printed
            print(HEADER, flush=True)
            rows = []
            for connections in CLOSED_CONNECTIONS:
                rows.append(bench.closed(connections))
                print(format_row(rows[-1]), flush=True)
            top = capacity(rows)
            print(f"capacity: {top:,.0f} right images/s (the best closed-loop row)", flush=True)
            if not top:
                # Nothing to scale the open loop by: every answer was the default.
                print("no reader got their own image: the open loop is not run")
                return
            default = fetch(server.port, f"/i/{BLOCK}.png")  # unsigned: the default
            with floor_server(default, workers, tmp) as floor:
                bare = BareHandler(floor, bench, layout.server_cpu_count())
                print(
                    f"a bare aiohttp handler answering the default's bytes: "
                    f"{bare.closed_rate():,.0f}/s in a closed loop (ceiling = the most "
                    "right/s possible if each refusal cost what that handler's answer "
                    "costs at the row's arrival rate)",
                    flush=True,
                )
                for multiple in OPEN_MULTIPLES:
                    row = bench.open(multiple, top)
                    print(format_row(row), flush=True)
                    sent = row.outcome.sent_rate
                    bare_rate = bare.open_rate(sent)
                    most = ceiling(top, bare_rate, sent)
                    reached = f"{row.outcome.right_rate / most:.0%}" if most else "-"
                    print(
                        f"  ceiling {most:,.0f} right/s at {sent:,.0f} sent/s (a bare answer "
                        f"at this rate: {1e6 * layout.server_cpu_count() / bare_rate:.0f} us "
                        f"of CPU): {reached} of it reached",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--workers", type=int, default=0, help="server workers (default: one per server CPU)"
    )
    parser.add_argument(
        "--generator-cpus",
        type=int,
        default=1,
        help="CPUs for wrk alone, the last of this process's (default 1; 0: shared with "
        "the server, as on a machine of one CPU)",
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each row")
    parser.add_argument(
        "--open-connections",
        type=int,
        default=None,
        help="connections of every open-loop row (default: sized to each row's rate)",
    )
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
