"""What every request goes through: an id, and for the API the token check and JSON errors.

These wrap handlers as routes are added, rather than being aiohttp middlewares: with
any middleware at all, aiohttp runs every request (each image open too) through the
middleware and a second layer of its own. The email routes, the hottest, call
`begin_request` themselves.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

from aiohttp import hdrs, web
from multidict import istr

from server.api import audit
from server.api.access import API_TOKEN, authenticate, require_scope
from server.api.app_state import CURRENT_REQUEST_ID, REDIS, SETTINGS
from server.api.errors import ApiError, is_store_outage, store_unavailable
from server.datastore.replication import until_replicated

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("atopen.api")
API_PREFIX = "/api/v1/"
PUBLIC_API_PATHS = frozenset({"/api/v1/openapi.json"})
REQUEST_ID_HEADER = "X-Request-Id"
# The `Server` header of every answer: the name without versions (aiohttp's default tells
# them to everyone). aiohttp only sets its own when a response has none.
SERVER_NAME = "atopen"

# Ids are a random per-process prefix and a counter (16 hex digits): unique across
# processes and restarts, without a system call per request.
_ID_PREFIX = os.urandom(8).hex()
# The counter's last three digits, written once: formatting a number per request cost
# more than the rest of giving the request its id.
_ID_TAILS = tuple(f"{low:03x}" for low in range(0x1000))


def _ids(high: int) -> list[str]:
    """The next 4,096 ids: made together, so that giving a request its id is a step of a
    C iterator rather than a generator's."""
    head = f"{_ID_PREFIX}{high:013x}"
    return [head + tail for tail in _ID_TAILS]


new_request_id = itertools.chain.from_iterable(map(_ids, itertools.count())).__next__
_REQUEST_ID_KEY = istr(REQUEST_ID_HEADER)


def request_id_of(request: web.Request) -> str:
    """The request's id: a sane one from the caller, or a new one. The caller echoes it
    in `X-Request-Id` (where the access line reads it)."""
    incoming = request.headers.get(_REQUEST_ID_KEY, "")
    return incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else new_request_id()


def begin_request(request: web.Request) -> str:
    """`request_id_of`, also set for the log lines of this request's task."""
    request_id = request_id_of(request)
    # aiohttp runs each request in a task of its own: nothing to reset afterwards.
    CURRENT_REQUEST_ID.set(request_id)
    return request_id


def with_request_id(handler: Handler) -> Handler:
    """`handler`, with the request's id given and echoed."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request_id = begin_request(request)
        response = await handler(request)
        headers = response.headers
        headers[REQUEST_ID_HEADER] = request_id
        headers[hdrs.SERVER] = SERVER_NAME
        return response

    return handle


def api_handler(handler: Handler) -> Handler:
    """`handler` behind the API's bearer token (but for the public document), with any
    failure answered as the API's JSON error, and the request's id."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _api(request, handler)

    return with_request_id(handle)


def routes_with(
    wrap: Callable[[Handler], Handler], routes: Iterable[web.AbstractRouteDef]
) -> list[web.RouteDef]:
    """`routes` with each handler wrapped by `wrap`."""
    wrapped = []
    for route in routes:
        if not isinstance(route, web.RouteDef):
            raise TypeError(f"only handler routes can be wrapped, not {route!r}")
        handler = cast(Handler, route.handler)
        wrapped.append(web.RouteDef(route.method, route.path, wrap(handler), route.kwargs))
    return wrapped


async def _allowed_elsewhere(request: web.Request) -> set[str]:
    """The methods the request's path is served with by the routes other than its own."""
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own:
            _, methods = await resource.resolve(request)
            allowed |= methods
    return allowed - {hdrs.METH_ANY}


async def api_not_routed(request: web.Request) -> web.StreamResponse:
    """An `/api/v1/` path no route serves: 405 (with `Allow`) if another method would be,
    else 404 (registered behind `api_handler`, so both come as JSON errors)."""
    allowed = await _allowed_elsewhere(request)
    if allowed:
        allow: dict[str, str] = {hdrs.ALLOW: ",".join(sorted(allowed))}
        raise ApiError(405, "method_not_allowed", "Method Not Allowed", headers=allow)
    raise ApiError(404, "not_found", "Not Found")


async def not_routed(request: web.Request) -> web.StreamResponse:
    """Any other path no route serves (registered last, under `/`): aiohttp's own 405 (with
    `Allow`) or 404, named by the server's `Server` header."""
    allowed = await _allowed_elsewhere(request)
    headers = {hdrs.SERVER: SERVER_NAME}
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed, headers=headers)
    raise web.HTTPNotFound(headers=headers)


async def _api(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _answer(request, handler)
    if audit.is_audited(request):
        await audit.record(request, request.get(API_TOKEN), response.status)
        # On a Redis Cluster: once the replicas hold the write (server/datastore/replication.py).
        if response.status < 400 and not await until_replicated(request.app[REDIS]):
            response = store_unavailable().response()
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC_API_PATHS:
            token = authenticate(request, request.app[SETTINGS].api_access)
            request[API_TOKEN] = token  # known before the scope check: a 403 is audited too
            require_scope(request, token)
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].api_max_body_bytes
        return ApiError(413, "too_large", f"body larger than {limit} bytes").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        allow: dict[str, str] | None = (
            {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        )
        return ApiError(exc.status, code, exc.reason, headers=allow).response()
    except Exception as exc:
        if is_store_outage(exc):
            log.warning("API request failed: the store is out of reach (%r)", exc)
            return store_unavailable().response()
        log.exception("API request failed")
        return ApiError(500, "internal", "internal error; see the server log").response()
