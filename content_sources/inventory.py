"""`inventory`: live items by SKU, e.g. `inventory["sku-1"].stock`.

The SKUs a block names literally are fetched in the open's round trip. A rule that
computes a SKU (`inventory[params.sku]`) asks for one that was not fetched; the view
notes it, answers "missing" for now, and the open fetches it and decides again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from content_sources.base import OpenRequest, RedisCommand
from content_sources.documents import decode_object
from content_sources.keys import inventory_key
from server.expressions import Missing


class InventoryView:
    """Items by SKU; an item that does not exist is a missing value."""

    __slots__ = ("_items", "unfetched")

    def __init__(self, items: Mapping[str, Mapping[str, object] | None]) -> None:
        self._items = items
        self.unfetched: set[str] = set()

    def __getitem__(self, sku: object) -> object:
        key = str(sku)
        if key not in self._items:
            self.unfetched.add(key)
            return Missing(hint=f"inventory item {key!r} not fetched")
        item = self._items[key]
        return item if item is not None else Missing(hint=f"no inventory item {key!r}")

    def __contains__(self, sku: object) -> bool:
        key = str(sku)
        if key not in self._items:
            self.unfetched.add(key)
        return self._items.get(key) is not None


class InventorySource:
    name = "inventory"

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        if not request.skus:
            return ()
        return (("MGET", *(inventory_key(s) for s in sorted(request.skus))),)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        values = replies[0] if replies and isinstance(replies[0], list) else []
        skus = sorted(request.skus)
        items = {sku: decode_object(raw) for sku, raw in zip(skus, values, strict=False)}
        return InventoryView({sku: items.get(sku) for sku in skus})
