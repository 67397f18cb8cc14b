"""Prometheus metrics, and the `/metrics` endpoint that serves them.

With several worker processes (`atopen serve --workers N`), each process writes its
samples to a shared directory (`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before
the workers start) and any worker answers `/metrics` with the sum over all of them.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import os
import socket
from bisect import bisect_left
from collections.abc import AsyncIterator, Sequence
from itertools import repeat
from operator import itemgetter

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from content_sources.store_timing import report_round_trips_to
from server.outcomes import FallbackReason, Outcome

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "atopen_requests_total", "Email-facing requests by route and outcome", ["route", "outcome"]
)
REQUEST_SECONDS = Histogram(
    "atopen_request_seconds",
    "Time to answer an email-facing request",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
RENDER_SECONDS_SERIES = Histogram(
    "atopen_render_seconds", "Time to render one image (in the pool)", buckets=_LATENCY_BUCKETS
)
RENDERS = Counter("atopen_renders_total", "Images rendered (not served from a cache)", ["block"])
CACHE = Counter("atopen_cache_total", "Render cache lookups by tier and result", ["tier", "result"])
FALLBACKS_SERIES = Counter(
    "atopen_fallbacks_total", "Opens answered with the pre-rendered default, by reason", ["reason"]
)
QUEUE_DEPTH = Gauge(
    "atopen_render_queue_depth",
    "Renders running or waiting for the pool, and opens holding a place for one",
    multiprocess_mode="livesum",
)
LOOP_LAG = Gauge(
    "atopen_event_loop_lag_seconds",
    "How late the event loop ran at worst in the last second (the most behind worker)",
    multiprocess_mode="livemax",
)
STORE_SECONDS_SERIES = Histogram(
    "atopen_store_seconds",
    "Time of one store round trip for opens (the reads of concurrent opens go together)",
    buckets=_LATENCY_BUCKETS,
)


class LocalCount:
    """A counter series that opens add to in this process, written to the series by
    `flush_local`. With several workers every write to a series is a locked write to a
    shared file, and an open would make several: one per second per series instead.

    For the event loop's thread only (the hot paths that use it run there)."""

    __slots__ = ("_pending", "_series")

    def __init__(self, series: Counter) -> None:
        self._series = series
        self._pending = 0.0
        _LOCAL.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._series.inc(pending)


class LocalHistogram:
    """`LocalCount` for a histogram: observations are counted per bucket in this process."""

    __slots__ = ("_bounds", "_counts", "_series", "_sum")

    def __init__(self, series: Histogram) -> None:
        self._series = series
        # The library's own bucket bounds (ending at +Inf) and, in `flush`, its per-bucket
        # values: it has no public way to add many observations at once.
        self._bounds = tuple(series._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _LOCAL.append(self)

    def observe(self, value: float) -> None:
        # The first bucket whose bound is at least the value, as the library chooses.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def observe_all(self, values: Sequence[float]) -> None:
        """`observe` each of `values`, binned in C."""
        counts = self._counts
        for bucket, count in collections.Counter(
            map(bisect_left, repeat(self._bounds), values)
        ).items():
            counts[bucket] += count
        self._sum += sum(values)

    def flush(self) -> None:
        if not any(self._counts):
            return
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        for bucket, count in zip(self._series._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self._series._sum.inc(total)


_LOCAL: list[LocalCount | LocalHistogram] = []
FLUSH_INTERVAL_S = 1.0


def flush_local() -> None:
    """Write what this process has counted locally to the shared series."""
    _count_image_answers()
    for tally in _LOCAL:
        tally.flush()


async def flush_local_periodically() -> None:
    """Run until cancelled: `flush_local` every `FLUSH_INTERVAL_S`."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        flush_local()


# The series every open touches, bound once (`labels()` is a locked lookup per call) and
# counted locally.
IMAGE_OUTCOMES = {
    kind: LocalCount(REQUESTS.labels("image", kind))
    for kind in (*dict.fromkeys(outcome.kind for outcome in Outcome), "unknown_block")
}
# Each outcome's tally, so that counting an open is one lookup by the outcome itself.
IMAGE_OUTCOME_COUNTS = {outcome: IMAGE_OUTCOMES[outcome.kind] for outcome in Outcome}
CLICKS = LocalCount(REQUESTS.labels("click", "redirected"))
IMAGE_SECONDS = LocalHistogram(REQUEST_SECONDS.labels("image"))
CLICK_SECONDS = LocalHistogram(REQUEST_SECONDS.labels("click"))
RENDER_SECONDS = LocalHistogram(RENDER_SECONDS_SERIES)
# Under overload most opens are shed: counted here too.
FALLBACKS: dict[FallbackReason, LocalCount] = {
    reason: LocalCount(FALLBACKS_SERIES.labels(reason.value)) for reason in FallbackReason
}
MEMORY_HITS = LocalCount(CACHE.labels("memory", "hit"))
MEMORY_MISSES = LocalCount(CACHE.labels("memory", "miss"))
STORE_SECONDS = LocalHistogram(STORE_SECONDS_SERIES)
report_round_trips_to(STORE_SECONDS.observe)


# Each image answer's outcome and time, appended by the image route as it answers (a
# list's append is all an open pays, where counting it there was a Python call, a lookup
# and a bisection) and added up by `flush_local`, every second.
IMAGE_ANSWERS: list[tuple[Outcome, float]] = []
_OUTCOME, _SECONDS = itemgetter(0), itemgetter(1)


def _count_image_answers() -> None:
    """The image answers appended since the last call, counted by outcome and timed."""
    answers = IMAGE_ANSWERS[:]
    IMAGE_ANSWERS.clear()
    for outcome, count in collections.Counter(map(_OUTCOME, answers)).items():
        IMAGE_OUTCOME_COUNTS[outcome].inc(count)
    IMAGE_SECONDS.observe_all(list(map(_SECONDS, answers)))


def exposition() -> bytes:
    """Every sample, summed over worker processes when there are several."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def metrics_route(tokens: tuple[str, ...]) -> web.RouteDef:
    """`GET /metrics`, readable with one of `tokens` as a bearer token."""

    async def handle(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogates: compared as those bytes.
        given = token.encode("utf-8", "surrogateescape")
        allowed = [hmac.compare_digest(given, t.encode()) for t in tokens]
        if scheme.lower() != "bearer" or not any(allowed):
            return web.Response(status=401, text="metrics need a bearer token\n")
        return _metrics_response()

    return web.get("/metrics", handle)


def _metrics_response() -> web.Response:
    flush_local()  # this process's own counts, so that they are in what it answers
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_port(app: web.Application, *, host: str, port: int) -> AsyncIterator[None]:
    """For `app.cleanup_ctx`: `GET /metrics` with no token on a port of its own.

    The port is the protection: bind it where only the scraper reaches. Every worker
    listens on it (SO_REUSEPORT, like the service port) and any one answers for all."""

    async def handle(_request: web.Request) -> web.Response:
        return _metrics_response()

    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", handle)
    runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=hasattr(socket, "SO_REUSEPORT"))
        await site.start()
        yield
    finally:
        await runner.cleanup()
