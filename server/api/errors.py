"""API errors as JSON (`{"error": {"code", "message", "details"}}`) and request body parsing.

Handlers raise `ApiError`; the wrapper every API handler gets
(`server.web.request_handling.api_handler`) turns it into the response. Messages are written
for the marketer reading them, never `str()` of an internal exception.

A request that fails because the store cannot be reached (down, restarting, still
loading its data, not answering in time) answers 503 `store_unavailable` with
`Retry-After`, not 500: nothing went wrong with the request, and the same request will
succeed once the store is back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    RedisClusterUnreachableError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as StoreConnectionError
from redis.exceptions import TimeoutError as StoreTimeoutError

# What the store client raises while the store is out of reach; BusyLoadingError (a
# restarted store still reading its append-only file) is a ConnectionError already, named
# for the reader.
# On a Redis Cluster, a slot whose master is failing over answers CLUSTERDOWN or TRYAGAIN,
# and a cluster none of whose nodes answers is unreachable.
STORE_OUTAGES = (
    StoreConnectionError,
    StoreTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    RedisClusterUnreachableError,
)
# The embedded store is restarted within a second or so of dying, and a client that
# retries sooner would only find it loading: a second is the wait worth asking for.
STORE_RETRY_AFTER_S = 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[dict[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "details": self.details}}
        response = json_response(body, status=self.status)
        response.headers.update(self.headers)
        return response


def store_unavailable() -> ApiError:
    """503: the store is out of reach; the request did nothing that can be counted on."""
    return ApiError(
        503,
        "store_unavailable",
        "the data store is unavailable right now; nothing is confirmed: retry the request "
        f"in {STORE_RETRY_AFTER_S} s or later",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def is_store_outage(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, is the store
    being out of reach (a handler may wrap the store's error in one of its own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, STORE_OUTAGES):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def invalid(field: str, message: str) -> ApiError:
    """422 naming one field."""
    return ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])


def invalid_fields(details: Sequence[dict[str, str]]) -> ApiError:
    """422 naming every bad field."""
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "invalid", summary or "invalid body", details)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 422 when it is not JSON (aiohttp enforces the size limit)."""
    raw = await request.read()
    if not raw.strip():
        raise invalid("body", "required: a JSON document")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid("body", f"not valid JSON ({exc.msg} at position {exc.pos})") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


async def read_list_field(request: web.Request, field: str, most: int, what: str) -> list[Any]:
    """The body's `field`: a list of 1 to `most` entries (`what` names them in the 422)."""
    body = await read_object(request)
    value = body.get(field)
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise invalid(field, f"required: a list of 1 to {most} {what}")
    return value
