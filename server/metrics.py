"""Prometheus metrics, and the `/metrics` endpoint that serves them.

With several worker processes (`atopen serve --workers N`), each process writes its
samples to a shared directory (`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before
the workers start) and any worker answers `/metrics` with the sum over all of them.
"""

from __future__ import annotations

import hmac
import os

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
RENDER_SECONDS = Histogram(
    "atopen_render_seconds", "Time to render one image (in the pool)", buckets=_LATENCY_BUCKETS
)
RENDERS = Counter("atopen_renders_total", "Images rendered (not served from a cache)", ["block"])
CACHE = Counter("atopen_cache_total", "Render cache lookups by tier and result", ["tier", "result"])
FALLBACKS = Counter(
    "atopen_fallbacks_total", "Opens answered with the pre-rendered default, by reason", ["reason"]
)
QUEUE_DEPTH = Gauge(
    "atopen_render_queue_depth",
    "Renders running or waiting for the pool",
    multiprocess_mode="livesum",
)
STORE_SECONDS = Histogram(
    "atopen_store_seconds",
    "Time of one store round trip for opens (the reads of concurrent opens go together)",
    buckets=_LATENCY_BUCKETS,
)


# The series every open touches, bound once: `labels()` is a locked lookup per call.
IMAGE_OUTCOMES = {
    outcome: REQUESTS.labels("image", outcome)
    for outcome in ("rendered", "cached", "static", "fallback", "unknown_block")
}
CLICKS = REQUESTS.labels("click", "redirected")
IMAGE_SECONDS = REQUEST_SECONDS.labels("image")
CLICK_SECONDS = REQUEST_SECONDS.labels("click")
MEMORY_HITS = CACHE.labels("memory", "hit")
MEMORY_MISSES = CACHE.labels("memory", "miss")


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
        allowed = [hmac.compare_digest(token.encode(), t.encode()) for t in tokens]
        if scheme.lower() != "bearer" or not any(allowed):
            return web.Response(status=401, text="metrics need a bearer token\n")
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", handle)
