"""`/api/v1/blocks`: register, read, list and delete blocks, and preview them as anyone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

from aiohttp import web

from content_sources.client import ClientKind, classify_client, client_of_kind
from content_sources.clock import zone
from content_sources.source import OpenRequest
from renderers.encode import CONTENT_TYPES
from renderers.plan import DPRS
from server.api.app_state import BLOCKS, OPENS, REDIS
from server.api.errors import (
    invalid,
    invalid_fields,
    json_response,
    not_found,
    read_json,
    read_object,
)
from server.api.ids import recipient_id
from server.api.instants import utc_instant
from server.blocks.compiling import BLOCK_ID_PATTERN, BlockError, literal_format
from server.blocks.snapshot import PreparedBlock
from server.records.open_log import impressions_key
from server.records.reports import BY_VALUES, block_report

routes = web.RouteTableDef()
PATH = "/api/v1/blocks/{id}"
# The longest span a report covers: the counters are kept 400 days.
MAX_REPORT_DAYS = 400


def _prepared(request: web.Request) -> PreparedBlock:
    block_id = request.match_info["id"]
    prepared = request.app[BLOCKS].get(block_id)
    if prepared is None:
        raise not_found(f"block {block_id!r}")
    return prepared


@routes.put(PATH)
async def put_block(request: web.Request) -> web.Response:
    block_id = request.match_info["id"]
    if not BLOCK_ID_PATTERN.match(block_id):
        raise invalid("id", "must be 1-128 letters, digits, '_', '.' or '-'")
    definition = await read_json(request)
    existed = request.app[BLOCKS].get(block_id) is not None
    try:
        prepared = await request.app[BLOCKS].put(block_id, definition)
    except BlockError as exc:
        raise invalid_fields([p.as_dict() for p in exc.problems]) from None
    return json_response(prepared.as_dict(), status=200 if existed else 201)


@routes.get(PATH)
async def get_block(request: web.Request) -> web.Response:
    return json_response(_prepared(request).as_dict())


@routes.get("/api/v1/blocks")
async def list_blocks(request: web.Request) -> web.Response:
    return json_response({"blocks": [p.as_dict() for p in request.app[BLOCKS].all()]})


@routes.delete(PATH)
async def delete_block(request: web.Request) -> web.Response:
    if not await request.app[BLOCKS].delete(request.match_info["id"]):
        raise not_found(f"block {request.match_info['id']!r}")
    return web.Response(status=204)


@routes.get("/api/v1/blocks/{id}/stats")
async def block_stats(request: web.Request) -> web.Response:
    """With `from`, `to` or `by`: the report's rows (server/records/reports.py) over the
    UTC days from `from` to `to` (default: the 30 days to now), by variant, client,
    country or day. Otherwise impressions per day and variant, newest first: `?days=7`."""
    prepared = _prepared(request)
    query = request.query
    # Checked even where the report's range makes it unused: the document refuses a bad
    # `days` whatever comes with it.
    raw_days = query.get("days", "7")
    if not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_REPORT_DAYS:
        raise invalid("days", f"must be a whole number from 1 to {MAX_REPORT_DAYS}")
    if {"from", "to", "by"} & query.keys():
        start, end = _report_range(query.get("from"), query.get("to"))
        by = query.get("by", "variant")
        if by not in BY_VALUES:
            raise invalid("by", f"must be one of {', '.join(BY_VALUES)}")
        days = [(start.date() + timedelta(days=i)).isoformat() for i in range(_days(start, end))]
        report = await block_report(
            request.app[REDIS], prepared.block.id, days, by, prepared.block.split
        )
        return json_response(
            {
                "id": prepared.block.id,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "by": by,
                **report,
            }
        )
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=i)).isoformat() for i in range(int(raw_days))]
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(impressions_key(prepared.block.id, day))
        counts = await pipe.execute()
    return json_response(
        {
            "id": prepared.block.id,
            "impressions": {
                day: {k.decode(): int(v) for k, v in sorted(count.items())}
                for day, count in zip(days, counts, strict=True)
            },
        }
    )


def _report_range(raw_from: str | None, raw_to: str | None) -> tuple[datetime, datetime]:
    """A report's instants (UTC); its rows cover the whole UTC days they fall on."""
    end = utc_instant(raw_to, "to", datetime.now(UTC))
    if raw_from is not None:
        start = utc_instant(raw_from, "from", datetime.now(UTC))
    else:
        start = max(end, datetime.min.replace(tzinfo=UTC) + timedelta(days=29)) - timedelta(days=29)
    if start > end:
        raise invalid("from", "must not be after `to`")
    if _days(start, end) > MAX_REPORT_DAYS:
        raise invalid("from", f"must be at most {MAX_REPORT_DAYS} days before `to`")
    return start, end


def _days(start: datetime, end: datetime) -> int:
    """How many UTC days from the one `start` falls on to the one `end` falls on."""
    return (end.date() - start.date()).days + 1


@routes.post("/api/v1/blocks/{id}/preview")
async def preview_block(request: web.Request) -> web.Response:
    """The image a recipient would get (or, with `Accept: application/json`, why)."""
    prepared = _prepared(request)
    body = await read_object(request)
    unknown = sorted(
        set(body) - {"recipient", "params", "at", "tz", "client", "location", "format", "dpr"}
    )
    if unknown:
        raise invalid_fields([{"field": k, "message": "unknown field"} for k in unknown])
    # Every field is optional: a field is given or left out, and `null` is neither.
    nulls = sorted(k for k, v in body.items() if v is None)
    if nulls:
        raise invalid_fields([{"field": k, "message": "must not be null"} for k in nulls])
    recipient = body.get("recipient")
    if recipient is not None:
        recipient = recipient_id(recipient)
    params = body.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise invalid("params", "must be an object of strings (merge fields)")
    at = utc_instant(body.get("at"), "at", datetime.now(UTC))
    fmt = literal_format(str(body.get("format", prepared.block.format)))
    if fmt is None:
        raise invalid("format", "must be png, jpg or gif")
    dpr = body.get("dpr", 1)
    if dpr not in DPRS or isinstance(dpr, bool):
        raise invalid("dpr", "must be 1, 2 or 3")
    client, user_agent = _client(body.get("client"))
    overrides: dict[str, object] = {} if client is None else {"client": client}
    if body.get("location") is not None:
        overrides["geo"] = _location(body["location"])
    open_request = OpenRequest(
        at=at,
        block_id=prepared.block.id,
        recipient=recipient,
        params=params,
        tz=_zone_name(body.get("tz")),
        block_tz=prepared.block.tz,
        user_agent=user_agent,
        skus=prepared.block.skus,
        poll_options=prepared.block.poll.options if prepared.block.poll else (),
    )
    opens = request.app[OPENS]
    choice = await opens.preview(prepared, open_request, overrides)
    if _wants_json(request.headers.get("Accept", "")):
        return json_response(
            {
                "variant": choice.variant,
                "link": opens.link_of(prepared, choice),
                "trace": [outcome.as_dict() for outcome in choice.trace],
                "sources": [source.as_dict() for source in choice.data_trace],
            }
        )
    return web.Response(
        body=await opens.render_choice(prepared, choice, fmt, dpr),
        content_type=CONTENT_TYPES[fmt],
        headers={"X-Atopen-Variant": choice.variant, "Cache-Control": "no-store"},
    )


def _wants_json(accept: str) -> bool:
    """JSON when the client's first choice is JSON; the image otherwise."""
    first = accept.split(",")[0].split(";")[0].strip().lower()
    return first == "application/json"


def _zone_name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or zone(value) is None):
        raise invalid("tz", "must be an IANA time zone name, e.g. Europe/Warsaw")
    return value


def _location(value: object) -> dict[str, object]:
    """A place to preview from: `{country, city, postal, lat, lon, tz}`, any of them."""
    if not isinstance(value, dict) or set(value) - {
        "country",
        "city",
        "postal",
        "lat",
        "lon",
        "tz",
    }:
        raise invalid("location", "must be an object of country, city, postal, lat, lon, tz")
    for name in ("country", "city", "postal", "tz"):
        if name in value and not isinstance(value[name], str):
            raise invalid(f"location.{name}", "must be a string")
    for name, limit in (("lat", 90), ("lon", 180)):
        number = value.get(name)
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int | float) or abs(number) > limit
        ):
            raise invalid(f"location.{name}", f"must be a number from -{limit} to {limit}")
    return {**value, "source": "preview"}


def _client(value: object) -> tuple[dict[str, object] | None, str | None]:
    """`{"kind": ...}` sets the client kind; `{"user_agent": ...}` classifies one."""
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"kind", "user_agent"}:
        raise invalid("client", 'must be {"kind": KIND} or {"user_agent": UA}')
    if "kind" in value:
        kind = value["kind"]
        if kind not in get_args(ClientKind):
            raise invalid("client.kind", f"must be one of {', '.join(get_args(ClientKind))}")
        return client_of_kind(kind).as_dict(), None
    user_agent = value.get("user_agent")
    if not isinstance(user_agent, str):
        raise invalid("client.user_agent", "must be a string")
    return classify_client(user_agent).as_dict(), user_agent
