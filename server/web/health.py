"""`/healthz` (the process is up) and `/readyz` (store reachable and blocks loaded)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from redis.exceptions import RedisError

from server.api.app_state import BLOCKS, REDIS
from server.api.errors import json_response

routes = web.RouteTableDef()
PING_TIMEOUT_S = 1.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up; `pid` tells which worker answered."""
    return json_response({"status": "ok", "pid": os.getpid()})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            await request.app[REDIS].ping()
        checks["store"] = "ok"
    except (RedisError, OSError, TimeoutError) as exc:
        checks["store"] = f"unreachable: {type(exc).__name__}"
    checks["blocks"] = "ok" if request.app[BLOCKS].loaded else "not loaded yet"
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
