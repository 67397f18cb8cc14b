"""`/api/v1/records`: every record of opens and clicks, as NDJSON from a cursor."""

from __future__ import annotations

import orjson
from aiohttp import web

from server.api.app_state import REDIS
from server.api.errors import ApiError, invalid
from server.records.stream import CURSOR_PATTERN, CursorExpiredError, read_page

routes = web.RouteTableDef()

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
CURSOR_HEADER = "X-Atopen-Cursor"


@routes.get("/api/v1/records")
async def list_records(request: web.Request) -> web.Response:
    """Records after `after` (a cursor; from the oldest kept without one), at most
    `limit`, one JSON object a line; `X-Atopen-Cursor` is the next call's `after`. An
    empty page means caught up; a cursor past the retention answers 410."""
    after = request.query.get("after")
    if after is not None and not CURSOR_PATTERN.match(after):
        raise invalid("after", "must be a cursor from X-Atopen-Cursor, e.g. 1733390000123-0")
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    try:
        page = await read_page(request.app[REDIS], after, int(raw_limit))
    except CursorExpiredError:
        raise ApiError(
            410,
            "cursor_expired",
            "records after this cursor are no longer kept: start again without `after`",
            [{"field": "after", "message": "older than the records kept"}],
        ) from None
    body = b"".join(
        orjson.dumps({"id": entry_id, **record.as_dict()}) + b"\n"
        for entry_id, record in page.entries
    )
    return web.Response(
        body=body,
        content_type="application/x-ndjson",
        headers={CURSOR_HEADER: page.cursor},
    )
