"""`make soak`: a bounded run at a steady mixed load, watching for what grows.

Starts `atopen serve --workers 2` on its own embedded store (in a fresh data
directory), registers the starter blocks, seeds a population through the API, and
sends a steady mix for a bounded time: signed opens of every starter block, unsigned
opens, clicks, and API writes (events, profile patches, stock changes), plus opens of
many campaigns' countdown blocks; opens and clicks come with the User-Agents of readers'
mail apps and proxies. Meanwhile it samples each worker's resident memory and open file
descriptors (from /proc), and the store's key count, memory, and the keys without a TTL
of kinds that should expire. It prints the figures after a warm-up, in the middle and at
the end, with the growth.

The warm-up fills every bounded in-process cache an open uses, as real traffic would:
each second's choice and drawing plan of every campaign's countdown in every zone (4,096
of each), each worker's render memory cache (`--cache-mb`), the client kinds of
User-Agents. It prints how full each one is, so that memory still growing after the
warm-up is a leak, not a cache filling.

Nothing fails on a figure (the machine is shared and noisy): read them. The run fails
only if the server under test does not start, or answers a request wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from content_sources.client import _classify as classify_user_agent
from content_sources.clock import zone
from loadtest.bench_serve import HOST, SECRET, TOKEN, api, free_port, wait_for_port
from loadtest.population import Population, seed
from server.blocks.selection import click_target
from server.opens.decide import MAX_REMEMBERED_CHOICES
from server.signing import Signer
from server.web.app import TEMPLATES_DIR

PROC = Path("/proc")
MIB = 1024 * 1024
# Kinds of keys (the name after `atopen:`) kept until changed or deleted: everything
# else the load makes is meant to expire. A kind missing here that shows up without a
# TTL is reported, so a new kind of key is looked at rather than assumed fine.
LASTING_KINDS = frozenset(
    {
        "profile",
        "inventory",
        "stores",
        "stores-geo",
        "blocks",
        "block-versions",
        "{atopen:blocks}",
        "audit",
        "records",
        "{atopen:records}",
        "rfm-cuts",
    }
)
SKUS = ("sku-tee", "sku-boots", "sku-cap")
# The capped streams the load appends to, by what they hold.
STREAMS = {"records": "atopen:records", "audit": "atopen:audit"}
# The load goes on this long past the last sample, so that it is taken under load.
END_SAMPLE_S = 5.0
# The most requests the load keeps in flight (more: the server is stuck). The client
# holds at most 100 connections (aiohttp's default); the rest wait in it for one.
MAX_IN_FLIGHT = 256
# The warm-up's burst at MAX_IN_FLIGHT ends this long before the measured window (or
# halfway through a shorter warm-up), so that its requests are done when it starts.
BURST_SETTLE_S = 10.0
# A worker's memory is flat when its least-squares slope over the last half of the
# measured window is at most this, or its rise along that slope is at most the next:
# a last half shorter than a minute (the short soak of `make bench`) cannot tell a slope
# that small from one step of the allocator (docs/soak.md, "The verdict").
FLAT_MIB_PER_MINUTE = 0.25
FLAT_RISE_MIB = 0.25
MEMORY_MISS = {"tier": "memory", "result": "miss"}
# The mix, by weight: what one request of the steady load is. Most of it opens the
# countdowns of running campaigns (a sale's last day); the rest is everything else.
MIX = {
    "countdown": 150,
    "open": 70,
    "unsigned_open": 5,
    "click": 12,
    "event": 6,
    "profile": 4,
    "stock": 3,
}
# The starter countdown, copied as one block per campaign (each with its own link).
COUNTDOWN = "sale-countdown"
# What fetches the images: Apple's privacy proxy, Gmail's and Yahoo's image proxies (one
# User-Agent each), and readers' own apps and browsers (thousands of versions and builds).
APPLE_PROXY = "Mozilla/5.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
FETCHERS = {APPLE_PROXY: 40, GMAIL_PROXY: 25, YAHOO_PROXY: 3, "reader": 32}
READER_AGENTS = 3_000
_READER_AGENT_FORMS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{major}.0.{build}.{patch} Safari/537.36",
    "Mozilla/5.0 (Linux; Android {android}; {phone}) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{major}.0.{build}.{patch} Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS {ios}_{minor} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/{ios_build}",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{firefox}.0) Gecko/20100101 Firefox/{firefox}.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{build}; Pro)",
)
_PHONES = ("SM-S918B", "SM-A546B", "Pixel 8", "Pixel 7a", "2201116SG", "CPH2451", "moto g54 5G")


@dataclass(frozen=True, slots=True)
class Sample:
    """The figures at one moment of the run."""

    at_s: float
    rss_mib: dict[int, float]  # worker pid -> resident memory
    # Of it: the main thread's malloc heap (`[heap]`), and anonymous mappings (Python's
    # object arenas, the other threads' malloc arenas, large blocks): what grows where.
    heap_mib: dict[int, float]
    anonymous_mib: dict[int, float]
    fds: dict[int, int]  # worker pid -> open file descriptors
    keys: int
    store_mib: float
    expiring_without_ttl: dict[str, int]  # kind -> keys of it that have no TTL
    streams: dict[str, int]  # capped stream -> its entries
    requests: int
    failures: int
    render_memory_misses: int  # summed over workers (/metrics): images put in memory
    renders: int  # summed over workers (/metrics)
    caches: list[CacheFill]


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """Each worker's resident memory and open files at one moment, taken every few
    seconds for the trend; and the most requests the load had in flight since the
    previous point (a worker that stalls gathers them, and their memory)."""

    at_s: float
    rss_mib: dict[int, float]
    own_fds: dict[int, int]  # open fds less the load's connections to it
    # Of them, Unix sockets: the connections to the store (the soak's is on a socket
    # file), which its client's pool opens when more commands are in flight than ever.
    store_connections: dict[int, int]
    peak_in_flight: int


@dataclass(frozen=True, slots=True)
class Trend:
    """One worker's resident memory over the measured window, from the trace: the
    least-squares slope over the whole window and over its last half, which decides."""

    worker: int  # 1, 2, ... in the order of their pids
    whole_mib_per_minute: float
    last_half_mib_per_minute: float
    last_half_minutes: float
    # The most open fds (less the load's connections) before the last half of the
    # window (the warm-up's burst included), and in it.
    fds_before: int
    fds_last_half: int

    @property
    def memory_flat(self) -> bool:
        slope = self.last_half_mib_per_minute
        return slope <= FLAT_MIB_PER_MINUTE or slope * self.last_half_minutes <= FLAT_RISE_MIB

    @property
    def fds_flat(self) -> bool:
        return self.fds_last_half <= self.fds_before


@dataclass(frozen=True, slots=True)
class CacheFill:
    """How much the load has put in one bounded cache that each worker keeps, by the
    arithmetic of what it sent: distinct keys (or MiB of distinct images), and the share
    of one worker (the kernel spreads connections evenly over the workers)."""

    cache: str
    bound: float  # the cache's limit, in `unit`
    unit: str
    sent: float  # distinct keys (or MiB) sent so far, to all workers
    per_worker: float
    full: bool  # each worker's share has reached the bound: it only replaces entries now


def reader_user_agents(count: int) -> list[str]:
    """`count` distinct User-Agents of readers' apps and browsers: a few families told
    apart by version and build numbers, as in real traffic (always the same ones)."""
    rng = random.Random(11)
    found: dict[str, None] = {}
    while len(found) < count:
        form = rng.choice(_READER_AGENT_FORMS)
        agent = form.format(
            major=rng.randrange(118, 132),
            build=rng.randrange(5000, 7000),
            patch=rng.randrange(200),
            android=rng.randrange(10, 15),
            phone=rng.choice(_PHONES),
            ios=rng.randrange(15, 19),
            minor=rng.randrange(7),
            ios_build=f"{rng.randrange(15, 22)}{rng.choice('ABCDEFG')}{rng.randrange(10, 400)}",
            firefox=rng.randrange(115, 134),
        )
        found[agent] = None
    return list(found)


def key_kind(key: bytes) -> str:
    name = key.decode(errors="replace")
    if name.startswith("{"):
        return name.split("}", 1)[0] + "}"
    return name.removeprefix("atopen:").split(":", 1)[0]


def campaign_block(countdown: dict[str, Any], number: int) -> dict[str, Any]:
    """The starter countdown as one campaign's block: the same design, its own link."""
    link = f"https://shop.example.com/deals?campaign={number}"
    variants = [{**variant, "link": link} for variant in countdown["variants"]]
    return {**countdown, "variants": variants, "default": {**countdown["default"], "link": link}}


def workers_of(supervisor: int) -> list[int]:
    """The live `atopen worker` processes the supervisor started."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone while we looked
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == supervisor and cmdline[-2:] == [b"worker", b""]:
            found.append(int(entry.name))
    return sorted(found)


def rss_mib(pid: int) -> float:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def resident_parts(pid: int) -> tuple[float, float]:
    """MiB resident in the `[heap]` mapping, and in anonymous mappings (from smaps)."""
    heap = anonymous = 0
    name = ""
    for line in (PROC / str(pid) / "smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's first line: address, ..., name
            name = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Rss:":
            if name == "[heap]":
                heap += int(fields[1])
            elif not name:
                anonymous += int(fields[1])
    return heap / 1024, anonymous / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(PROC / str(pid) / "fd"))


def connection_sockets(port: int) -> set[str]:
    """The sockets of the TCP connections accepted on `port` (the load's, on the
    server's side), as `/proc/PID/fd` names them: their number follows the load, not
    the server."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in (PROC / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A":  # 0A: the listening socket
                found.add(f"socket:[{fields[9]}]")
    return found


def unix_sockets() -> set[str]:
    """Every Unix socket of the machine, as `/proc/PID/fd` names them."""
    lines = (PROC / "net" / "unix").read_text().splitlines()[1:]
    return {f"socket:[{line.split()[6]}]" for line in lines}


def own_fds(pid: int, connections: set[str], unix: set[str]) -> tuple[int, int]:
    """Open fds of `pid` that are not among `connections`, and how many of those are
    among the `unix` sockets."""
    own = in_unix = 0
    for fd in os.listdir(PROC / str(pid) / "fd"):
        try:
            target = os.readlink(PROC / str(pid) / "fd" / fd)
        except OSError:  # closed while we looked
            continue
        if target not in connections:
            own += 1
            in_unix += target in unix
    return own, in_unix


def memory_point(supervisor: int, port: int, load: Load, started: float) -> MemoryPoint:
    at_s = round(time.monotonic() - started, 1)
    pids = workers_of(supervisor)
    connections, unix = connection_sockets(port), unix_sockets()
    fds = {pid: own_fds(pid, connections, unix) for pid in pids}
    return MemoryPoint(
        at_s=at_s,
        rss_mib={pid: round(rss_mib(pid), 1) for pid in pids},
        own_fds={pid: own for pid, (own, _) in fds.items()},
        store_connections={pid: store for pid, (_, store) in fds.items()},
        peak_in_flight=load.take_peak_in_flight(),
    )


def trends(trace: list[MemoryPoint], warmup: float, seconds: float) -> list[Trend]:
    """Each worker's trend over the measured window (`warmup` to `warmup + seconds`)."""
    halfway = warmup + seconds / 2
    found = []
    for number, pid in enumerate(sorted(trace[0].rss_mib), start=1):
        mine = [point for point in trace if pid in point.rss_mib]
        window = [(p.at_s / 60, p.rss_mib[pid]) for p in mine if p.at_s >= warmup]
        last_half = [(p.at_s / 60, p.rss_mib[pid]) for p in mine if p.at_s >= halfway]
        before = [p.own_fds[pid] for p in mine if p.at_s < halfway]
        if len(last_half) < 2 or len(window) == len(last_half) or not before:
            continue  # the worker ended, or too few points to draw a line through

        def slope(part: list[tuple[float, float]]) -> float:
            minutes, mib = zip(*part, strict=True)
            return statistics.linear_regression(minutes, mib).slope

        found.append(
            Trend(
                worker=number,
                whole_mib_per_minute=round(slope(window), 2),
                last_half_mib_per_minute=round(slope(last_half), 2),
                last_half_minutes=last_half[-1][0] - last_half[0][0],
                fds_before=max(before),
                fds_last_half=max(p.own_fds[pid] for p in mine if p.at_s >= halfway),
            )
        )
    return found


def store_figures(store: redis.Redis) -> tuple[int, float, dict[str, int]]:
    """The key count, used memory and, by kind, keys without a TTL that should have one."""
    missing: Counter[str] = Counter()
    keys = 0
    batch: list[bytes] = []

    def check(batch: list[bytes]) -> None:
        pipe = store.pipeline(transaction=False)
        for key in batch:
            pipe.ttl(key)
        for key, ttl in zip(batch, pipe.execute(), strict=True):
            kind = key_kind(key)
            if ttl == -1 and kind not in LASTING_KINDS:
                missing[kind] += 1

    for key in store.scan_iter(count=1000):
        keys += 1
        batch.append(key)
        if len(batch) == 1000:
            check(batch)
            batch = []
    check(batch)
    memory = store.info("memory")["used_memory"] / MIB
    return keys, memory, dict(missing)


def memory_by_kind(store: redis.Redis) -> Counter[str]:
    """Bytes each kind of key takes (Redis's own estimate, per key)."""
    used: Counter[str] = Counter()
    keys = list(store.scan_iter(count=1000))
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        pipe = store.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key)
        for key, size in zip(batch, pipe.execute(), strict=True):
            used[key_kind(key)] += size or 0
    return used


class Load:
    """A steady mix of requests at a fixed rate; counts what was sent and what failed."""

    def __init__(
        self, base_url: str, population: Population, blocks: list[str], campaigns: list[str]
    ) -> None:
        self.base_url = base_url
        self.population = population
        self.blocks = blocks
        self.signer = Signer([SECRET])
        self.rng = random.Random(7)
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self.in_flight = 0
        self._peak_in_flight = 0
        self._kinds = list(MIX)
        self._weights = list(MIX.values())
        self._fetchers = list(FETCHERS)
        self._fetcher_weights = list(FETCHERS.values())
        self._reader_agents = reader_user_agents(READER_AGENTS)
        by_zone: dict[str, list[int]] = {}
        for index in range(population.size):
            by_zone.setdefault(str(population.profile(index)["tz"]), []).append(index)
        self._by_zone = by_zone
        # Every campaign in every zone in turn: as long as a second has fewer countdown
        # opens than pairs, each one is a new choice (the campaign, its zone's second).
        self._countdowns = [(c, z) for c in campaigns for z in sorted(by_zone)]
        self.rng.shuffle(self._countdowns)
        self._next_countdown = 0
        # What the caches are keyed by, as sent or received.
        self.countdown_seconds: set[tuple[str, str, int]] = set()
        self.user_agents: set[str] = set()
        self.zones: set[str] = set()
        self.images: dict[bytes, int] = {}  # digest of each distinct image -> its bytes
        self.links: set[str] = set()  # where the clicks went

    def take_peak_in_flight(self) -> int:
        """The most requests in flight at once since the last call."""
        peak, self._peak_in_flight = self._peak_in_flight, self.in_flight
        return peak

    def _countdown(self) -> tuple[str, int]:
        """The next campaign's countdown and a reader in the next zone."""
        campaign, tz = self._countdowns[self._next_countdown % len(self._countdowns)]
        self._next_countdown += 1
        self.countdown_seconds.add((campaign, tz, int(time.time())))
        return campaign, self.rng.choice(self._by_zone[tz])

    def _user_agent(self) -> str:
        fetcher = self.rng.choices(self._fetchers, self._fetcher_weights)[0]
        agent = self.rng.choice(self._reader_agents) if fetcher == "reader" else fetcher
        self.user_agents.add(agent)
        return agent

    def _request(self) -> tuple[str, str, str, object]:
        """(kind, method, path, JSON body or None) of the next request."""
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind == "countdown":
            campaign, index = self._countdown()
            self.zones.add(str(self.population.profile(index)["tz"]))
            return kind, "GET", self.population.image_url(self.signer, campaign, index), None
        index = self.rng.randrange(self.population.size)
        recipient = self.population.recipient(index)
        block = self.rng.choice(self.blocks)
        if kind == "open":
            self.zones.add(str(self.population.profile(index)["tz"]))
            return kind, "GET", self.population.image_url(self.signer, block, index), None
        if kind == "unsigned_open":
            return kind, "GET", f"/i/{block}.png?r={recipient}", None
        if kind == "click":
            return kind, "GET", self.population.click_url(self.signer, block, index), None
        if kind == "event":
            event = {"recipient": recipient, "type": self.rng.choice(("view", "purchase"))}
            return kind, "POST", "/api/v1/events", {**event, "props": {"amount": 20}}
        if kind == "profile":
            patch = {"visits": self.rng.randrange(1000)}
            return kind, "PATCH", f"/api/v1/profiles/{recipient}", patch
        stock = {"stock": self.rng.randrange(5), "name": "Tee", "price": 19.0}
        return kind, "PUT", f"/api/v1/inventory/{self.rng.choice(SKUS)}", stock

    async def _send(self, session: aiohttp.ClientSession, limit: asyncio.Semaphore) -> None:
        kind, method, path, body = self._request()
        if path.startswith("/api/"):
            headers = {"Authorization": f"Bearer {TOKEN}"}
        else:
            headers = {"User-Agent": self._user_agent()}
        self.in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self.in_flight)
        try:
            async with session.request(
                method, path, json=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.read()
                expected = {"click": 302}.get(kind, 200)
                ok = response.status == expected or (kind == "event" and response.status == 202)
                if not ok:
                    self.failures[f"{kind} {response.status}"] += 1
                elif kind == "click":
                    self.links.add(response.headers.get("Location", ""))
                elif path.startswith("/i/"):
                    digest = hashlib.blake2b(answer, digest_size=16).digest()
                    self.images[digest] = len(answer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures[f"{kind} {type(exc).__name__}"] += 1
        finally:
            self.in_flight -= 1
            limit.release()

    async def run(self, rate: float, until: float, burst: tuple[float, float]) -> None:
        """Send `rate` requests a second until the monotonic time `until`; between the
        two monotonic times of `burst`, keep MAX_IN_FLIGHT requests in flight instead."""
        timeout = aiohttp.ClientTimeout(total=30)
        limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(self.base_url, timeout=timeout) as session:
            start = time.monotonic()
            paced = 0  # requests the rate has asked for so far
            while (now := time.monotonic()) < until:
                due = int((now - start) * rate) - paced
                paced += due
                if burst[0] <= now < burst[1]:
                    due = MAX_IN_FLIGHT - len(tasks)
                for _ in range(due):
                    await limit.acquire()
                    task = asyncio.create_task(self._send(session, limit))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    self.sent += 1
                await asyncio.sleep(0.005)
            await asyncio.gather(*tasks)


@contextmanager
def serving(data_dir: Path, workers: int, log: Path, cache_mb: int) -> Iterator[tuple[int, int]]:
    """`atopen serve` on its own embedded store: (port, supervisor pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOPEN_")}
    env.update(
        ATOPEN_SECRET=SECRET,
        ATOPEN_API_TOKEN=TOKEN,
        ATOPEN_PORT=str(port),
        ATOPEN_DATA_DIR=str(data_dir),
        ATOPEN_LOG_LEVEL="WARNING",
        ATOPEN_CACHE_MEMORY_MB=str(cache_mb),
    )
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "-m", "server", "serve", "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process)
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def render_counts(port: int) -> tuple[int, int]:
    """Render memory cache misses and renders so far, summed over workers (/metrics)."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    misses = renders = 0.0
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == "atopen_cache_total" and found.labels == MEMORY_MISS:
                misses += found.value
            elif found.name == "atopen_renders_total":
                renders += found.value
    return int(misses), int(renders)


def cache_fills(load: Load, workers: int, cache_mb: int) -> list[CacheFill]:
    """How full the load has made each bounded cache an open uses, in each worker."""

    def fill(cache: str, bound: int, unit: str, sent: float) -> CacheFill:
        share = sent / workers
        return CacheFill(cache, bound, unit, round(sent, 1), round(share, 1), share >= bound)

    # A remembered choice is keyed by the block and the second in the reader's zone; its
    # drawing plan by that choice (one format, one scale here): one of each per key sent.
    seconds = len(load.countdown_seconds)
    kept_by_lru_cache = (classify_user_agent, zone, click_target)
    agents, zones, links = (c.cache_parameters()["maxsize"] or 0 for c in kept_by_lru_cache)
    return [
        fill("countdown choices", MAX_REMEMBERED_CHOICES, "entries", seconds),
        fill("countdown drawing plans", MAX_REMEMBERED_CHOICES, "entries", seconds),
        fill("render memory cache", cache_mb, "MiB", sum(load.images.values()) / MIB),
        fill("client kinds of User-Agents", agents, "entries", len(load.user_agents)),
        fill("time zones", zones, "entries", len(load.zones)),
        fill("click targets", links, "entries", len(load.links)),
    ]


def sample(
    supervisor: int, port: int, store: redis.Redis, load: Load, started: float, cache_mb: int
) -> Sample:
    at_s = round(time.monotonic() - started, 1)  # the store's figures take seconds
    pids = workers_of(supervisor)
    parts = {pid: resident_parts(pid) for pid in pids}
    keys, store_mib, missing = store_figures(store)
    misses, renders = render_counts(port)
    return Sample(
        at_s=at_s,
        rss_mib={pid: round(rss_mib(pid), 1) for pid in pids},
        heap_mib={pid: round(heap, 1) for pid, (heap, _) in parts.items()},
        anonymous_mib={pid: round(anonymous, 1) for pid, (_, anonymous) in parts.items()},
        fds={pid: open_fds(pid) for pid in pids},
        keys=keys,
        store_mib=round(store_mib, 1),
        expiring_without_ttl=missing,
        streams={name: store.xlen(key) for name, key in STREAMS.items()},
        requests=load.sent,
        failures=sum(load.failures.values()),
        render_memory_misses=misses,
        renders=renders,
        caches=cache_fills(load, len(pids), cache_mb),
    )


def report(samples: list[Sample]) -> str:
    """The figures as a table: one column per sample, then the growth from first to last."""
    first = samples[0]
    columns = "".join(f"{f'at {s.at_s:.0f} s':>12}" for s in samples)
    lines = [f"{'':38}{columns}{'growth':>20}"]

    def row(name: str, values: list[float], decimals: int = 0) -> None:
        cells = "".join(f"{v:>12,.{decimals}f}" for v in values)
        growth = values[-1] - values[0]
        share = f" ({growth / values[0]:+.1%})" if values[0] else ""
        lines.append(f"{name:38}{cells}{f'{growth:+,.{decimals}f}{share}':>20}")

    for number, pid in enumerate(sorted(first.rss_mib), start=1):
        if all(pid in s.rss_mib for s in samples):
            row(f"worker {number} RSS MiB", [s.rss_mib[pid] for s in samples], 1)
            row("  of it, malloc [heap]", [s.heap_mib[pid] for s in samples], 1)
            row("  of it, anonymous mappings", [s.anonymous_mib[pid] for s in samples], 1)
            row(f"worker {number} open fds", [s.fds[pid] for s in samples])
        else:
            lines.append(f"worker {number} (pid {pid}) ended during the run")
    row("store keys", [s.keys for s in samples])
    row("store memory MiB", [s.store_mib for s in samples], 1)
    row(
        "keys without TTL that should expire",
        [sum(s.expiring_without_ttl.values()) for s in samples],
    )
    for name in STREAMS:
        row(f"{name} stream entries", [s.streams[name] for s in samples])
    row("requests sent", [s.requests for s in samples])
    row("requests answered wrongly", [s.failures for s in samples])
    row("renders (/metrics)", [s.renders for s in samples])
    row("render memory misses (/metrics)", [s.render_memory_misses for s in samples])
    if samples[-1].expiring_without_ttl:
        lines.append(f"without TTL, by kind: {samples[-1].expiring_without_ttl}")
    lines.append("")
    lines.append(caches_report(samples[0], samples[-1]))
    return "\n".join(lines)


def trace_report(trace: list[MemoryPoint], found: list[Trend], halfway: float) -> str:
    """Each worker's resident memory and open fds minute by minute, the load's peak in
    flight in each minute, and the trends with their verdicts."""
    minutes: list[list[MemoryPoint]] = []
    for point in trace:
        if not minutes or int(point.at_s // 60) > int(minutes[-1][0].at_s // 60):
            minutes.append([])
        minutes[-1].append(point)
    columns = "".join(f"{f'{m[-1].at_s:.0f} s':>8}" for m in minutes)
    lines = [f"{'the last point of each minute':30}{columns}"]
    for number, pid in enumerate(sorted(trace[0].rss_mib), start=1):
        cells = "".join(f"{m[-1].rss_mib.get(pid, 0):>8.1f}" for m in minutes)
        lines.append(f"{f'worker {number} RSS MiB':30}{cells}")
        cells = "".join(f"{m[-1].own_fds.get(pid, 0):>8}" for m in minutes)
        lines.append(f"{'  own fds (less the load)':30}{cells}")
        cells = "".join(f"{m[-1].store_connections.get(pid, 0):>8}" for m in minutes)
        lines.append(f"{'  of them, store connections':30}{cells}")
    peaks = "".join(f"{max(p.peak_in_flight for p in m):>8}" for m in minutes)
    lines.append(f"{'requests in flight, most':30}{peaks}")
    lines.append("")
    lines.append(
        f"trend of the measured window, least squares: memory is flat at most "
        f"{FLAT_MIB_PER_MINUTE:+.2f} MiB a minute over its last half (from {halfway:.0f} s), "
        f"or rising at most {FLAT_RISE_MIB:.2f} MiB in it; "
        f"own fds are flat if no more in it than before"
    )
    lines.append(f"{'':12}{'whole window':>16}{'last half':>16}{'own fds, most':>20}{'':2}verdict")
    lines.append(f"{'':12}{'MiB a minute':>16}{'MiB a minute':>16}{'before/last half':>20}")
    for trend in found:
        memory = "memory flat" if trend.memory_flat else "memory growing"
        fds = "fds flat" if trend.fds_flat else "fds growing"
        halves = f"{trend.fds_before}/{trend.fds_last_half}"
        lines.append(
            f"{f'worker {trend.worker}':12}{trend.whole_mib_per_minute:>+16.2f}"
            f"{trend.last_half_mib_per_minute:>+16.2f}{halves:>20}  {memory}, {fds}"
        )
    return "\n".join(lines)


def verdict(found: list[Trend], last: Sample, workers: int) -> str:
    """One line: whether memory and open fds were flat in every worker, and no key that
    should expire lacked a TTL."""
    problems = [f"worker {t.worker} memory growing" for t in found if not t.memory_flat]
    problems += [f"worker {t.worker} fds growing" for t in found if not t.fds_flat]
    if len(found) < workers:
        problems.append(f"{workers - len(found)} worker(s) without a trend (ended, or too short)")
    if last.expiring_without_ttl:
        problems.append(f"{sum(last.expiring_without_ttl.values())} keys without a TTL")
    if not problems:
        return "verdict: flat memory and open fds in every worker, no key without its TTL"
    return "verdict: " + ", ".join(problems)


def caches_report(first: Sample, last: Sample) -> str:
    """Each bounded cache's share of one worker after the warm-up and at the end, against
    its bound: `full` (it only replaces entries now), `no new keys` (nothing new came in
    the measured window: it cannot have grown), or `still filling` (it may have)."""
    lines = [
        f"{'bounded cache, one worker':30}{'after warm-up':>16}{'at the end':>14}"
        f"{'bound':>10}  state"
    ]
    for start, end in zip(first.caches, last.caches, strict=True):
        if start.full:
            state = "full"
        elif start.sent == end.sent:
            state = "no new keys"
        else:
            state = "still filling"
        lines.append(
            f"{start.cache:30}{start.per_worker:>16,.1f}{end.per_worker:>14,.1f}"
            f"{start.bound:>10,.0f}  {start.unit}, {state}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=120, help="measured time (after warm-up)")
    parser.add_argument(
        "--warmup", type=float, default=60, help="time to fill the caches before measuring"
    )
    parser.add_argument("--rate", type=float, default=375, help="requests per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=2_000)
    parser.add_argument("--campaigns", type=int, default=96, help="countdown blocks, one each")
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=1,
        help="each worker's render memory cache (ATOPEN_CACHE_MEMORY_MB), small enough to fill",
    )
    parser.add_argument(
        "--burst",
        type=float,
        default=15,
        help="seconds of the warm-up (ending 10 s before it does) at the most requests in flight",
    )
    parser.add_argument(
        "--every", type=float, default=10, help="seconds between points of the memory trace"
    )
    parser.add_argument(
        "--json", action="store_true", help="end with the samples, trace and trends as JSON"
    )
    args = parser.parse_args()
    population = Population(args.recipients)
    blocks = sorted(TEMPLATES_DIR.glob("blocks/*.json"))
    with tempfile.TemporaryDirectory(prefix="atopen-soak-") as tmp:
        data_dir, log = Path(tmp) / "data", Path(tmp) / "serve.log"
        with serving(data_dir, args.workers, log, args.cache_mb) as (port, supervisor):
            for path in blocks:
                body = orjson.loads(path.read_bytes())
                api(port, "PUT", f"/api/v1/blocks/{path.stem}", body)
            countdown = orjson.loads((TEMPLATES_DIR / "blocks" / f"{COUNTDOWN}.json").read_bytes())
            campaigns = [f"{COUNTDOWN}-{n:03d}" for n in range(1, args.campaigns + 1)]
            for number, campaign in enumerate(campaigns, start=1):
                api(port, "PUT", f"/api/v1/blocks/{campaign}", campaign_block(countdown, number))
            base_url = f"http://{HOST}:{port}"
            asyncio.run(seed(base_url, TOKEN, population))
            load = Load(base_url, population, [path.stem for path in blocks], campaigns)
            store = redis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
            print(
                f"soak: {args.workers} workers, {args.rate:g} requests/s for {args.seconds:g} s "
                f"after {args.warmup:g} s of warm-up, {args.recipients:,} recipients, "
                f"{len(blocks)} blocks and {len(campaigns)} campaigns' countdowns, "
                f"{args.cache_mb} MiB render memory cache",
                flush=True,
            )
            samples, trace = asyncio.run(_run(args, supervisor, port, store, load))
            biggest = memory_by_kind(store).most_common(6)
            store.close()
        found = trends(trace, args.warmup, args.seconds)
        print(report(samples))
        print("store MiB by kind of key: " + ", ".join(f"{k} {v / MIB:.1f}" for k, v in biggest))
        print()
        print(trace_report(trace, found, args.warmup + args.seconds / 2))
        print(verdict(found, samples[-1], args.workers))
        if load.failures:
            print(f"answered wrongly: {dict(load.failures)}")
            print(log.read_text(errors="replace")[-4000:])
        if args.json:
            figures = {
                "samples": [asdict(s) for s in samples],
                "trace": [asdict(p) for p in trace],
                "trends": [asdict(t) for t in found],
            }
            print(orjson.dumps(figures, option=orjson.OPT_NON_STR_KEYS).decode())
    raise SystemExit(1 if load.failures else 0)


async def _run(
    args: argparse.Namespace, supervisor: int, port: int, store: redis.Redis, load: Load
) -> tuple[list[Sample], list[MemoryPoint]]:
    """Run the load, sampling after the warm-up, halfway through and at the end (while
    the load still runs, so the connections it holds open are counted each time), and
    tracing the workers' memory every `args.every` seconds from the start."""
    started = time.monotonic()
    end = started + args.warmup + args.seconds
    burst_end = started + args.warmup - min(BURST_SETTLE_S, args.warmup / 2)
    burst = (burst_end - args.burst, burst_end)
    running = asyncio.create_task(load.run(args.rate, end + END_SAMPLE_S, burst))
    sampled_at = (args.warmup, args.warmup + args.seconds / 2, args.warmup + args.seconds)
    tracing = asyncio.create_task(_trace(args, sampled_at, supervisor, port, load, started))
    samples = []
    for at in sampled_at:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        samples.append(
            await asyncio.to_thread(sample, supervisor, port, store, load, started, args.cache_mb)
        )
        print(f"sampled at {samples[-1].at_s:.0f} s", flush=True)
    trace = await tracing
    await running
    return samples, trace


async def _trace(
    args: argparse.Namespace,
    sampled_at: tuple[float, ...],
    supervisor: int,
    port: int,
    load: Load,
    started: float,
) -> list[MemoryPoint]:
    """A memory point every `args.every` seconds and at each sample's time."""
    last = sampled_at[-1]
    ticks = int(last // args.every) + 1
    times = sorted({*(n * args.every for n in range(ticks)), *sampled_at})
    trace = []
    for at in times:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        trace.append(await asyncio.to_thread(memory_point, supervisor, port, load, started))
    return trace


if __name__ == "__main__":
    main()
