"""The audit log: every API request that is not a read, with the name of the token that
made it (never the token), its route, the id it named and how it ended.

Each entry goes two ways. It is a JSON log line on the `atopen.audit` logger, which
writes at INFO whatever `ATOPEN_LOG_LEVEL` says, so the operator's log pipeline keeps
it as long as it keeps logs. And, for requests made with a valid token, it is added to
a capped stream in the store, `atopen:audit`, read back with `GET /api/v1/audit` (admin
scope): the newest `ATOPEN_AUDIT_MAX_ENTRIES` entries, none older than
`ATOPEN_AUDIT_RETENTION_DAYS`. Requests without a valid token are only logged, so that
anyone who can reach the API cannot push the real entries out of the stream.

An entry that cannot be stored (the store is out of reach) is still logged, with a
warning; the request's own answer is not changed by it.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from content_sources.redis_keys import PREFIX
from server.api.access import route_template
from server.api.app_state import CURRENT_REQUEST_ID, REDIS, SETTINGS
from server.api.errors import invalid, json_response
from server.api_tokens import ApiToken

AUDIT_KEY = f"{PREFIX}audit"
READ_METHODS = frozenset({"GET", "HEAD"})
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_STREAM_ID = re.compile(r"([0-9]{1,20})(-([0-9]{1,20}))?")
_MAX_PART = 2**64 - 1  # each of a stream id's two numbers

log = logging.getLogger("atopen.audit")
# Audit lines are kept whatever the level of the other logs: they are the record of
# who changed what, not diagnostics.
log.setLevel(logging.INFO)


def is_audited(request: web.Request) -> bool:
    return request.method not in READ_METHODS


def entry_of(request: web.Request, token: ApiToken | None, status: int) -> dict[str, Any]:
    """What the audit keeps of a request: never its token, body or query."""
    ids = list(request.match_info.values())
    return {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "token": None if token is None else token.name,
        "method": request.method,
        "route": route_template(request),
        "id": "/".join(ids) if ids else None,
        "status": status,
        "request_id": CURRENT_REQUEST_ID.get(),
    }


async def record(request: web.Request, token: ApiToken | None, status: int) -> None:
    """Log the request's entry, and keep it in the store when a valid token made it."""
    entry = entry_of(request, token, status)
    log.info("api write", extra={"fields": entry})
    if token is None:
        return
    settings = request.app[SETTINGS]
    oldest_ms = int(time.time() * 1000) - settings.audit_retention_days * 86_400_000
    try:
        async with request.app[REDIS].pipeline(transaction=False) as pipe:
            pipe.xadd(
                AUDIT_KEY,
                {"entry": orjson.dumps(entry)},
                maxlen=settings.audit_max_entries,
                approximate=False,
            )
            pipe.xtrim(AUDIT_KEY, minid=str(oldest_ms), approximate=False)
            await pipe.execute()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("audit entry not stored: %r", exc, extra={"fields": entry})


def _start_after(raw: str) -> str | None:
    """The first stream id after the cursor `raw` (None: there can be none)."""
    if raw == "":
        return "-"
    match = _STREAM_ID.fullmatch(raw)
    if match is None:
        raise invalid("after", "must be a cursor from an earlier page (like 1733400000000-0)")
    ms, seq = int(match.group(1)), int(match.group(3) or 0)
    if seq < _MAX_PART and ms <= _MAX_PART:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < _MAX_PART else None


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


routes = web.RouteTableDef()


@routes.get("/api/v1/audit")
async def read_audit(request: web.Request) -> web.Response:
    """Entries after the cursor `after`, oldest first; the answer's `after` is the next
    page's cursor (the same when there is nothing new)."""
    after = request.query.get("after", "")
    start = _start_after(after)
    limit = _limit(request.query.get("limit"))
    entries: list[dict[str, Any]] = []
    if start is not None:
        page: Any = await request.app[REDIS].xrange(AUDIT_KEY, start, "+", limit)
        for stream_id, fields in page:
            entries.append({"cursor": stream_id.decode(), **orjson.loads(fields[b"entry"])})
    next_after = entries[-1]["cursor"] if entries else (after or "0")
    return json_response({"entries": entries, "after": next_after})
