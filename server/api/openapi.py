"""`GET /api/v1/openapi.json`: the API's OpenAPI 3 document (kept in the `server` package)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

DOCUMENT = Path(__file__).parent.parent / "openapi.json"
routes = web.RouteTableDef()


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=DOCUMENT.read_bytes(), content_type="application/json")
