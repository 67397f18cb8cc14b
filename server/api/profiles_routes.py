"""`/api/v1/profiles/{rid}`: a recipient's profile; DELETE erases all that recipient's data."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from content_sources.clock import zone
from content_sources.redis_keys import recipient_keys
from server.api.app_state import PROFILES, REDIS
from server.api.errors import invalid, json_response, not_found, read_object
from server.api.ids import recipient_id
from server.records.open_log import FLUSH_INTERVAL_S

log = logging.getLogger("atopen.api")
routes = web.RouteTableDef()
PATH = "/api/v1/profiles/{rid}"
# Opens answered just before an erasure may still have their writes queued in a worker
# (the recipient's memory of what they were shown, engagement, last seen place), written
# within a flush interval or so. The erasure is done again once those have landed, so
# that they cannot bring the recipient back.
ERASE_AGAIN_AFTER_S = 20 * FLUSH_INTERVAL_S
# The second passes under way (a task is only weakly held by the event loop).
_SECOND_PASSES: set[asyncio.Task[None]] = set()


def _checked(profile: dict[str, Any]) -> dict[str, Any]:
    tz = profile.get("tz")
    if tz is not None and (not isinstance(tz, str) or zone(tz) is None):
        raise invalid("tz", "must be an IANA time zone name, e.g. Europe/Warsaw")
    return profile


def _answer(rid: str, profile: dict[str, Any]) -> web.Response:
    return json_response({"recipient": rid, "profile": profile})


@routes.put(PATH)
async def put_profile(request: web.Request) -> web.Response:
    rid = recipient_id(request.match_info["rid"], "rid")
    body = _checked(await read_object(request))
    return _answer(rid, await request.app[PROFILES].put(rid, body))


@routes.patch(PATH)
async def patch_profile(request: web.Request) -> web.Response:
    """JSON merge patch (RFC 7396); creates the profile when there is none."""
    rid = recipient_id(request.match_info["rid"], "rid")
    patch = await read_object(request)
    patched = await request.app[PROFILES].patch(rid, patch, check=_checked)
    return _answer(rid, patched or {})


@routes.get(PATH)
async def get_profile(request: web.Request) -> web.Response:
    rid = recipient_id(request.match_info["rid"], "rid")
    profile = await request.app[PROFILES].get(rid)
    if profile is None:
        raise not_found(f"profile {rid!r}")
    return _answer(rid, profile)


@routes.delete(PATH)
async def delete_profile(request: web.Request) -> web.Response:
    """Erase the recipient: profile, events, idempotency keys and remembered renders."""
    rid = recipient_id(request.match_info["rid"], "rid")
    redis = request.app[REDIS]
    await redis.delete(*recipient_keys(rid))
    second_pass = asyncio.create_task(_erase_again(redis, rid))
    _SECOND_PASSES.add(second_pass)
    second_pass.add_done_callback(_SECOND_PASSES.discard)
    return web.Response(status=204)


async def _erase_again(redis: Redis, rid: str) -> None:
    """Erase `rid` once more, after the writes of opens answered before the erasure."""
    await asyncio.sleep(ERASE_AGAIN_AFTER_S)
    try:
        await redis.delete(*recipient_keys(rid))
    except (RedisError, OSError, TimeoutError) as exc:  # acknowledged already: say so in the log
        log.warning("second pass of erasing a recipient failed: %r", exc)
