"""Typed application state: every `web.AppKey` in one place, and the values of the
request being answered."""

from __future__ import annotations

import contextvars

from aiohttp import web
from redis.asyncio import Redis

from content_sources.documents import DocumentStore
from content_sources.events import EventLog
from content_sources.segments import RfmPolicy
from server.blocks.snapshot import BlockStore
from server.opens import Opens
from server.records.open_log import OpenLog
from server.settings import Settings
from server.signing import Signer

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
SIGNER = web.AppKey("signer", Signer)
BLOCKS = web.AppKey("blocks", BlockStore)
OPENS = web.AppKey("opens", Opens)
OPEN_LOG = web.AppKey("open_log", OpenLog)
PROFILES = web.AppKey("profiles", DocumentStore)
INVENTORY = web.AppKey("inventory", DocumentStore)
EVENTS = web.AppKey("events", EventLog)
RFM_POLICY = web.AppKey("rfm_policy", RfmPolicy)

# aiohttp answers each request in a task of its own: what a handler sets here is its
# request's alone, and the log lines written from that task carry it. (The request's
# own storage would do as well, but costs more to set.)
CURRENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
