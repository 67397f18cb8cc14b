"""`POST /api/v1/events`: one event or a batch; the whole batch validates or none is stored."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from content_sources.documents import without_nulls
from content_sources.events import Event
from content_sources.segments import record_purchases
from server.api.app_state import EVENTS, REDIS, RFM_POLICY
from server.api.errors import ApiError, invalid, invalid_fields, json_response, read_json
from server.api.ids import recipient_id
from server.api.instants import utc_instant

routes = web.RouteTableDef()
MAX_BATCH = 1000
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_KEYS = {"recipient", "type", "ts", "props", "id"}


def parse_event(raw: object, prefix: str, now: datetime) -> tuple[str, Event]:
    """One event from the API's JSON form; raises ApiError naming the field."""
    if not isinstance(raw, dict):
        raise invalid(prefix or "body", "must be an event object")
    field = f"{prefix}." if prefix else ""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise invalid(f"{field}{unknown[0]}", "unknown field")
    # `ts` and `id` are optional: given or left out; `null` is neither.
    for name in ("ts", "id"):
        if name in raw and raw[name] is None:
            raise invalid(f"{field}{name}", "must not be null: leave the field out")
    recipient = recipient_id(raw.get("recipient"), f"{field}recipient")
    kind = raw.get("type")
    if not isinstance(kind, str) or not _TYPE.match(kind):
        raise invalid(f"{field}type", "required: 1-64 letters, digits, '_', '.', ':' or '-'")
    props = raw.get("props", {})
    if not isinstance(props, dict):
        raise invalid(f"{field}props", "must be an object")
    event_id = raw.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 128):
        raise invalid(f"{field}id", "must be a string of 1-128 characters")
    return recipient, Event(
        id=event_id or uuid.uuid4().hex,
        type=kind,
        ts=utc_instant(raw.get("ts"), f"{field}ts", now),
        props=without_nulls(props),
    )


@routes.post("/api/v1/events")
async def post_events(request: web.Request) -> web.Response:
    body: Any = await read_json(request)
    now = datetime.now(UTC)
    batch = body if isinstance(body, list) else [body]
    if isinstance(body, list) and not 1 <= len(body) <= MAX_BATCH:
        raise invalid("body", f"a batch holds 1 to {MAX_BATCH} events")
    events: list[tuple[str, Event]] = []
    problems: list[dict[str, str]] = []
    for i, raw in enumerate(batch):
        try:
            events.append(parse_event(raw, f"[{i}]" if isinstance(body, list) else "", now))
        except ApiError as exc:
            problems.extend(exc.details)
    if problems:
        raise invalid_fields(problems)
    outcomes = await request.app[EVENTS].store(events, now)
    await record_purchases(request.app[REDIS], events, now, request.app[RFM_POLICY])
    skipped = [{"index": i, "reason": why} for i, why in enumerate(outcomes) if why is not None]
    return json_response(
        {"received": len(events), "stored": len(events) - len(skipped), "skipped": skipped},
        status=202,
    )
