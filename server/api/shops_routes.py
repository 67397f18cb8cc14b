"""`/api/v1/stores`: the shop's physical stores, one at a time or in bulk (all or nothing).

A store is checked whole before anything is written, and every problem is named, so
a rejected body leaves the stores as they were. Positions must be ones Redis's geo
index can hold, and opening hours must be in the one format `today_hours` shows.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from content_sources.clock import zone
from content_sources.documents import without_nulls
from content_sources.shops import WEEKDAYS, StoreDirectory
from server.api.app_state import REDIS
from server.api.errors import (
    ApiError,
    invalid,
    invalid_fields,
    json_response,
    not_found,
    read_json,
    read_object,
)
from server.api.ids import sku as plain_id
from server.blocks.compiling import is_http_url

routes = web.RouteTableDef()
PATH = "/api/v1/stores/{id}"
MAX_BULK = 10_000
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_TEXT = 1000
# Redis's geo index covers latitudes up to ±85.05112878 (the Web Mercator square).
MAX_LAT = 85.05112878
# Fields `stores.nearest()` adds to each store it lists.
RESERVED = ("id", "distance", "distance_unit", "today_hours")
_RANGE = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
HOURS_FORMAT = '"HH:MM-HH:MM", several joined by ",", or "closed"'

Problems = list[dict[str, str]]


def check_store(raw: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], Problems]:
    """The store without `null` members, and a problem for each bad field (none if valid)."""
    store: dict[str, Any] = without_nulls(raw)
    problems: Problems = []

    def bad(name: str, message: str) -> None:
        problems.append({"field": f"{prefix}{name}", "message": message})

    # Reserved even as `null`: the document forbids the names whatever their value.
    for name in RESERVED:
        if name in raw:
            bad(name, "reserved: stores.nearest() sets it")
    for name in ("name", "address"):
        value = store.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            bad(name, f"required: a non-empty string of at most {MAX_TEXT} characters")
    for name, limit in (("lat", MAX_LAT), ("lon", 180.0)):
        value = store.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > limit:
            bad(name, f"required: a number from -{limit} to {limit}")
    url = store.get("url")
    if url is not None and not (isinstance(url, str) and is_http_url(url)):
        bad("url", "must be an absolute http(s) URL")
    tz = store.get("tz")
    if tz is not None and not (isinstance(tz, str) and zone(tz) is not None):
        bad("tz", "must be an IANA time zone name, e.g. Europe/Warsaw")
    hours = store.get("hours")
    if hours is not None:
        if not isinstance(hours, dict):
            bad("hours", f"must be an object by weekday ({', '.join(WEEKDAYS)})")
        else:
            for day, value in hours.items():
                if day not in WEEKDAYS:
                    bad(f"hours.{day}", f"unknown day; days are {', '.join(WEEKDAYS)}")
                elif not _valid_hours(value):
                    bad(f"hours.{day}", f"must be {HOURS_FORMAT}, e.g. 09:00-18:00")
    return store, problems


def _valid_hours(value: object) -> bool:
    """`closed`, or ranges that each open before they close, in order, within the day."""
    if value == "closed":
        return True
    if not isinstance(value, str):
        return False
    previous_end = -1
    for part in value.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            return False
        start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if not previous_end < start < end <= 24 * 60:
            return False
        previous_end = end
    return True


def _directory(request: web.Request) -> StoreDirectory:
    return StoreDirectory(request.app[REDIS])


def _answer(store_id: str, store: dict[str, Any], status: int = 200) -> web.Response:
    return json_response({"id": store_id, "store": store}, status=status)


@routes.put(PATH)
async def put_store(request: web.Request) -> web.Response:
    store_id = plain_id(request.match_info["id"], "id")
    store, problems = check_store(await read_object(request))
    if problems:
        raise invalid_fields(problems)
    stored, created = await _directory(request).put(store_id, store)
    return _answer(store_id, stored, 201 if created else 200)


@routes.get(PATH)
async def get_store(request: web.Request) -> web.Response:
    store_id = plain_id(request.match_info["id"], "id")
    store = await _directory(request).get(store_id)
    if store is None:
        raise not_found(f"store {store_id!r}")
    return _answer(store_id, store)


@routes.delete(PATH)
async def delete_store(request: web.Request) -> web.Response:
    store_id = plain_id(request.match_info["id"], "id")
    if not await _directory(request).delete(store_id):
        raise not_found(f"store {store_id!r}")
    return web.Response(status=204)


@routes.get("/api/v1/stores")
async def list_stores(request: web.Request) -> web.Response:
    """A page of stores sorted by id: `?limit=` (1 to 1000, default 100) and `?after=`,
    the `next` of the page before (null on the last page)."""
    raw_limit = request.query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    after = request.query.get("after")
    if after is not None:
        after = plain_id(after, "after")
    stores, next_after = await _directory(request).page(after, int(raw_limit))
    return json_response(
        {
            "stores": [{"id": store_id, "store": store} for store_id, store in stores],
            "next": next_after,
        }
    )


@routes.post("/api/v1/stores")
async def bulk_stores(request: web.Request) -> web.Response:
    """An array of stores, each with its `id`; stored in one transaction or not at all."""
    body = await read_json(request)
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_BULK:
        raise invalid("body", f"must be an array of 1 to {MAX_BULK} stores, each with an id")
    stores: dict[str, dict[str, Any]] = {}
    problems: Problems = []
    for i, raw in enumerate(body):
        if not isinstance(raw, dict):
            problems.append({"field": f"[{i}]", "message": "must be a store object"})
            continue
        fields = dict(raw)
        try:
            store_id = plain_id(fields.pop("id", None), f"[{i}].id")
            if store_id in stores:
                raise invalid(f"[{i}].id", f"duplicate: {store_id!r} is earlier in the array")
        except ApiError as exc:
            problems.extend(exc.details)
            store_id = None
        store, found = check_store(fields, f"[{i}].")
        problems.extend(found)
        if store_id is not None:
            stores[store_id] = store
    if problems:
        raise invalid_fields(problems)
    await _directory(request).put_many(stores)
    return json_response({"stored": len(stores)})
