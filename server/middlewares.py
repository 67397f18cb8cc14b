"""Request ids, API authentication, and JSON errors for the API."""

from __future__ import annotations

import hmac
import itertools
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.api.errors import ApiError
from server.keys import REQUEST_ID, SETTINGS
from server.logs import CURRENT_REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("atopen.api")
API_PREFIX = "/api/v1/"
PUBLIC_API_PATHS = frozenset({"/api/v1/openapi.json"})


# Ids are a random per-process prefix and a counter: unique across processes and
# restarts, without a system call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request gets an id (or keeps a sane one from the caller), set for the logs
    and echoed back; `/api/v1` requests also get the token check and JSON errors.

    One middleware, not two: each layer costs every image open a coroutine call."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = (
        incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else _new_request_id()
    )
    request[REQUEST_ID] = request_id
    token = CURRENT_REQUEST_ID.set(request_id)
    try:
        if request.path.startswith(API_PREFIX):
            response = await _api(request, handler)
        else:
            response = await handler(request)
    finally:
        CURRENT_REQUEST_ID.reset(token)
    response.headers["X-Request-Id"] = request_id
    return response


async def _api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check and JSON error bodies for `/api/v1`."""
    try:
        if request.path not in PUBLIC_API_PATHS:
            _authenticate(request)
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].api_max_body_bytes
        return ApiError(413, "too_large", f"body larger than {limit} bytes").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return ApiError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason).response()
    except Exception:
        log.exception("API request failed")
        return ApiError(500, "internal", "internal error; see the server log").response()


def _authenticate(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    tokens = request.app[SETTINGS].api_tokens
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer TOKEN)")
    # Compare against every token, so timing does not tell which one is close.
    matches = [hmac.compare_digest(token.encode(), t.encode()) for t in tokens]
    if not any(matches):
        raise ApiError(401, "unauthorized", "invalid bearer token")
