"""API errors as JSON (`{"error": {"code", "message", "details"}}`) and request body parsing.

Handlers raise `ApiError`; the wrapper every API handler gets
(`server.request_handling.api_handler`) turns it into the response. Messages are written
for the marketer reading them, never `str()` of an internal exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: Sequence[dict[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "details": self.details}}
        return json_response(body, status=self.status)


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
