"""`/api/v1/profiles/{rid}`: a recipient's profile; DELETE erases all that recipient's data."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from content_sources.clock import zone
from content_sources.keys import recipient_keys
from server.api.errors import invalid, json_response, not_found, read_object
from server.api.ids import recipient_id
from server.keys import PROFILES, REDIS

routes = web.RouteTableDef()
PATH = "/api/v1/profiles/{rid}"


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
    await request.app[REDIS].delete(*recipient_keys(rid))
    return web.Response(status=204)
