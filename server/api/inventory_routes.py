"""`/api/v1/inventory`: live items by SKU, one at a time or in bulk (all or nothing)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.api.app_state import INVENTORY
from server.api.errors import (
    ApiError,
    invalid,
    invalid_fields,
    json_response,
    not_found,
    read_json,
    read_object,
)
from server.api.ids import sku as sku_id

routes = web.RouteTableDef()
PATH = "/api/v1/inventory/{sku}"
MAX_BULK = 10_000
_STRING_FIELDS = ("name", "image", "url")


def check_item(item: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The known fields must have their types; any other field is kept as given."""
    stock = item.get("stock")
    if stock is not None and (
        isinstance(stock, bool)
        # A whole number as JSON counts them: `3.0` is one.
        or not (isinstance(stock, int) or (isinstance(stock, float) and stock.is_integer()))
        or stock < 0
    ):
        raise invalid(f"{prefix}stock", "must be a whole number, 0 or more")
    price = item.get("price")
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or price < 0
    ):
        raise invalid(f"{prefix}price", "must be a number, 0 or more")
    for name in _STRING_FIELDS:
        if name in item and item[name] is not None and not isinstance(item[name], str):
            raise invalid(f"{prefix}{name}", "must be a string")
    return item


def _answer(sku: str, item: dict[str, Any]) -> web.Response:
    return json_response({"sku": sku, "item": item})


@routes.put(PATH)
async def put_item(request: web.Request) -> web.Response:
    sku = sku_id(request.match_info["sku"])
    item = check_item(await read_object(request))
    return _answer(sku, await request.app[INVENTORY].put(sku, item))


@routes.patch(PATH)
async def patch_item(request: web.Request) -> web.Response:
    sku = sku_id(request.match_info["sku"])
    patch = await read_object(request)
    patched = await request.app[INVENTORY].patch(sku, patch, create=False, check=check_item)
    if patched is None:
        raise not_found(f"inventory item {sku!r}")
    return _answer(sku, patched)


@routes.get(PATH)
async def get_item(request: web.Request) -> web.Response:
    sku = sku_id(request.match_info["sku"])
    item = await request.app[INVENTORY].get(sku)
    if item is None:
        raise not_found(f"inventory item {sku!r}")
    return _answer(sku, item)


@routes.delete(PATH)
async def delete_item(request: web.Request) -> web.Response:
    sku = sku_id(request.match_info["sku"])
    if not await request.app[INVENTORY].delete(sku):
        raise not_found(f"inventory item {sku!r}")
    return web.Response(status=204)


@routes.post("/api/v1/inventory")
async def bulk_items(request: web.Request) -> web.Response:
    """An array of items, each with its `sku`; stored in one transaction or not at all."""
    body = await read_json(request)
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_BULK:
        raise invalid("body", f"must be an array of 1 to {MAX_BULK} items, each with a sku")
    items: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, str]] = []
    for i, raw in enumerate(body):
        try:
            if not isinstance(raw, dict):
                raise invalid(f"[{i}]", "must be an item object")
            item = dict(raw)
            sku = sku_id(item.pop("sku", None), f"[{i}].sku")
            items[sku] = check_item(item, f"[{i}].")
        except ApiError as exc:
            problems.extend(exc.details)
    if problems:
        raise invalid_fields(problems)
    await request.app[INVENTORY].put_many(items)
    return json_response({"stored": len(items)})
