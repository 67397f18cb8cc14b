"""The application factory: routes, their handlers wrapped, and resources as cleanup contexts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from content_sources import build_sources
from content_sources.documents import DocumentStore
from content_sources.events import EventLog
from content_sources.geo import open_geoip
from content_sources.http_data import HttpData
from content_sources.outbound import guarded_connector
from content_sources.redis_keys import inventory_key, profile_key
from content_sources.segments import RfmPolicy
from renderers.fonts import FontError, FontFace, available_fonts
from renderers.resources import LocalResources
from server import metrics
from server.api import access as access_api
from server.api import audit as audit_api
from server.api import blocks_routes as blocks_api
from server.api import events_routes as events_api
from server.api import inventory_routes as inventory_api
from server.api import profiles_routes as profiles_api
from server.api import records_routes as records_api
from server.api import segment_spec_routes as segment_spec_api
from server.api import shops_routes as shops_api
from server.api import signing_routes as signing_api
from server.api import snippets_routes as snippets_api
from server.api import tokens_routes as tokens_api
from server.api.app_state import (
    BLOCKS,
    EVENTS,
    INVENTORY,
    OPEN_LOG,
    OPENS,
    PROFILES,
    REDIS,
    RFM_POLICY,
    SETTINGS,
    SIGNER,
)
from server.api.openapi import routes as openapi_routes
from server.blocks.snapshot import BlockPreparer, BlockStore, stop_task
from server.datastore.redis_client import open_store
from server.opens import Opens, OpensSettings
from server.opens.loop_lag import LoopLag
from server.opens.remote_images import RemoteImageLimits, RemoteImages
from server.opens.render_cache import RenderCache
from server.opens.render_pool import RenderPool
from server.records.open_log import OpenLog
from server.records.segments_job import run_segments_job
from server.records.writes import record_writer
from server.settings import Settings, SettingsError
from server.signing import Signer
from server.studio import studio_routes
from server.web import health
from server.web.backpressure import RefusalPause
from server.web.email_routes import EmailRoutes
from server.web.request_handling import (
    API_PREFIX,
    api_handler,
    api_not_routed,
    not_routed,
    routes_with,
    with_request_id,
)
from server.web.templates_dir import TEMPLATES_DIR as TEMPLATES_DIR  # re-exported: others use it

log = logging.getLogger("atopen")

# Store commands on the open path must fail fast: the render deadline is a few hundred ms.
STORE_TIMEOUT_S = 2.0


def fonts_of(fonts_dir: Path | None) -> dict[str, FontFace]:
    """The bundled fonts, the system's (fontconfig) and those in `ATOPEN_FONTS_DIR`."""
    try:
        return available_fonts(fonts_dir)
    except FontError as exc:
        raise SettingsError(f"ATOPEN_FONTS_DIR: {exc}") from None


def create_app(settings: Settings, *, redis_url: str) -> web.Application:
    """Build the app; nothing connects until it starts."""
    # No middlewares (see server.web.request_handling): handlers are wrapped as they are added.
    app = web.Application(client_max_size=settings.api_max_body_bytes)
    app[SETTINGS] = settings
    app[SIGNER] = Signer(settings.secrets)
    email = EmailRoutes(settings.trusted_proxies, RefusalPause(settings.refusal_pause_ms / 1000))
    app.router.add_routes(email.routes())  # they give and echo request ids themselves
    operations = [*health.routes, metrics.metrics_route(settings.metrics_token_list)]
    app.router.add_routes(routes_with(with_request_id, operations))
    app.router.add_routes(routes_with(with_request_id, studio_routes()))
    for table in (
        blocks_api.routes,
        profiles_api.routes,
        events_api.routes,
        inventory_api.routes,
        signing_api.routes,
        snippets_api.routes,
        tokens_api.routes,
        shops_api.routes,
        records_api.routes,
        segment_spec_api.routes,
        access_api.routes,
        audit_api.routes,
        openapi_routes,
    ):
        app.router.add_routes(routes_with(api_handler, table))
    app.router.add_route("*", API_PREFIX + "{path:.*}", api_handler(api_not_routed))
    # Last, under `/`: what no route serves (aiohttp's 404 or 405, named `Server: atopen`).
    app.router.add_route("*", "/{path:.*}", not_routed)
    app.cleanup_ctx.append(partial(_services, redis_url=redis_url, email=email))
    if settings.metrics_port:
        app.cleanup_ctx.append(
            partial(metrics.metrics_port, host=settings.host, port=settings.metrics_port)
        )
    return app


async def _services(
    app: web.Application, *, redis_url: str, email: EmailRoutes
) -> AsyncIterator[None]:
    """Start the store client, render pool, block snapshot and its change feed; stop in reverse."""
    settings = app[SETTINGS]
    redis = open_store(
        redis_url, timeout_s=STORE_TIMEOUT_S, max_connections=settings.redis_max_connections
    )
    pool = RenderPool(
        threads=settings.render_thread_count,
        cpus=settings.worker_cpus,
        max_waiting=settings.render_queue,
    )
    cache = RenderCache(
        redis,
        memory_bytes=settings.cache_memory_mb * 1024 * 1024,
        shared_ttl_s=settings.cache_ttl_s,
    )
    opens_settings = OpensSettings.of(settings)
    open_log = OpenLog(
        redis, click_memory_s=opens_settings.click_memory_s, records=record_writer(settings)
    )
    loop_lag = LoopLag()
    loop_lag.start()
    resources = LocalResources(
        [settings.assets_dir, TEMPLATES_DIR / "assets"], fonts_of(settings.fonts_dir)
    )
    remote_images = RemoteImages(
        RemoteImageLimits(
            connect_timeout_s=settings.remote_image_connect_timeout_ms / 1000,
            read_timeout_s=settings.remote_image_read_timeout_ms / 1000,
            max_bytes=settings.remote_image_max_bytes,
            max_pixels=settings.remote_image_max_pixels,
            ttl_s=settings.remote_image_cache_s,
            cache_bytes=settings.remote_image_cache_mb * 1024 * 1024,
            fetch_allow=settings.fetch_allow,
        )
    )
    geoip = open_geoip(settings.geoip_db) if settings.geoip_db is not None else None
    sources = build_sources(settings.sources, geoip)
    blocks = BlockStore(
        redis,
        BlockPreparer(resources, sources, frozenset(settings.data_secrets)),
    )
    # Live data connects only to public addresses and ATOPEN_FETCH_ALLOW's networks.
    session = aiohttp.ClientSession(
        connector=guarded_connector(settings.fetch_allow, limit=100, ttl_dns_cache=300),
        trust_env=False,
    )
    http_data = HttpData(settings.data_secrets, session, redis)
    opens = Opens(
        redis=redis,
        signer=app[SIGNER],
        sources=sources,
        resources=resources,
        pool=pool,
        cache=cache,
        http_data=http_data,
        remote_images=remote_images,
        open_log=open_log,
        loop_lag=loop_lag,
        settings=opens_settings,
    )
    app[REDIS] = redis
    app[BLOCKS] = blocks
    app[OPENS] = opens
    app[OPEN_LOG] = open_log
    email.start(blocks=blocks, opens=opens, open_log=open_log, redis=redis)
    app[PROFILES] = DocumentStore(redis, profile_key)
    app[INVENTORY] = DocumentStore(redis, inventory_key, on_change=opens.inventory_changed)
    app[EVENTS] = EventLog(
        redis,
        max_per_recipient=settings.events_max_per_recipient,
        retention=timedelta(days=settings.events_retention_days),
    )
    # Serve only once the change feed is subscribed and the snapshot synced after it: a
    # block changed while this process started would otherwise be unknown here for a while.
    first_sync: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    feed = asyncio.create_task(blocks.follow_changes(first_sync), name="block-changes")
    # From before the first sync, which can take a while: until it is done, writers wait
    # for this process (the feed registers it), so it starts serving with their changes.
    heartbeat = asyncio.create_task(blocks.presence.keep_alive(), name="block-heartbeat")
    # Also wake if the feed itself fails outright (a bug): its error ends the startup.
    await asyncio.wait({first_sync, feed}, return_when=asyncio.FIRST_COMPLETED)
    if feed.done():
        await stop_task(heartbeat)
        feed.result()
    try:
        first_sync.result()
        # Before serving, so the first opens do not wait for it.
        await opens.connect()
    except (RedisError, OSError) as exc:
        log.error("store unreachable at startup (%s); /readyz stays 503 until it answers", exc)
    writer = asyncio.create_task(open_log.run(), name="open-log")
    counts = asyncio.create_task(metrics.flush_local_periodically(), name="metrics")
    tasks = [heartbeat, feed, writer, counts]
    policy = RfmPolicy(settings.segments_window_days, settings.segments_history_days)
    app[RFM_POLICY] = policy
    if settings.segments_interval_s:
        job = run_segments_job(redis, settings.segments_interval_s, policy=policy)
        tasks.append(asyncio.create_task(job, name="segments"))
    try:
        yield
    finally:
        for task in tasks:
            await stop_task(task)
        # Writers wait for this process no longer (else until its heartbeat goes stale).
        await blocks.presence.leave()
        await session.close()
        await remote_images.close()
        if geoip is not None:
            geoip.close()
        loop_lag.stop()
        await open_log.flush()
        opens.close()
        metrics.flush_local()
        pool.shutdown()
        await redis.aclose()
