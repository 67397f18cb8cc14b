"""`inventory`: live items by SKU, e.g. `inventory["sku-1"].stock`.

The SKUs a block names literally are fetched in the open's round trip. A rule that
computes a SKU (`inventory[params.sku]`) asks for one that was not fetched; the view
notes it, answers "missing" for now, and the open fetches it and decides again.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache

import orjson

from content_sources.documents import decode_object
from content_sources.expressions import Missing
from content_sources.redis_keys import inventory_key
from content_sources.source import OpenRequest, Reach, RedisCommand


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

    def first_available(self, skus: object, n: int = 1) -> object:
        """The first `n` items of `skus` that are in stock (`stock > 0`), in list order,
        each with its `sku`; missing when none is. A reopen shows what is buyable then."""
        if not isinstance(skus, list | tuple) or isinstance(n, bool) or not 1 <= n <= 50:
            return Missing(hint="first_available needs a list of SKUs and 1 <= n <= 50")
        found: list[dict[str, object]] = []
        for sku in skus:
            item = self[sku]
            if isinstance(item, Mapping) and _in_stock(item.get("stock")):
                found.append({"sku": str(sku), **item})
                if len(found) == n:
                    break
        return found or Missing(hint="none of the items is in stock")

    def fingerprint(self) -> bytes:
        """The items this view holds, as bytes: equal for equal stock, prices and names."""
        return orjson.dumps(self._items, option=orjson.OPT_SORT_KEYS)

    def __contains__(self, sku: object) -> bool:
        key = str(sku)
        if key not in self._items:
            self.unfetched.add(key)
        return self._items.get(key) is not None


def _in_stock(stock: object) -> bool:
    return isinstance(stock, int | float) and not isinstance(stock, bool) and stock > 0


@lru_cache(maxsize=1024)
def _mget(skus: frozenset[str]) -> tuple[RedisCommand, ...]:
    """The command that reads `skus` (a block names the same few at every open)."""
    if not skus:
        return ()
    return (("MGET", *(inventory_key(s) for s in sorted(skus))),)


def _fingerprint(inventory: object) -> Hashable:
    return inventory.fingerprint() if isinstance(inventory, InventoryView) else None


class InventorySource:
    name = "inventory"
    depends_on = frozenset[str]()
    reach = Reach.SHARED
    always_build = False
    after_round_trip = None
    memo_part = staticmethod(_fingerprint)
    # Every open of a block reads the same items: a worker may answer them from a
    # read made less than `ATOPEN_INVENTORY_MAX_AGE_MS` ago.
    shared_reads = True
    reads_address = False

    def commands(self, request: OpenRequest) -> Sequence[RedisCommand]:
        return _mget(request.skus)

    def build(
        self, request: OpenRequest, replies: Sequence[object], context: Mapping[str, object]
    ) -> object:
        values = replies[0] if replies and isinstance(replies[0], list) else []
        skus = sorted(request.skus)
        items = {sku: decode_object(raw) for sku, raw in zip(skus, values, strict=False)}
        return InventoryView({sku: items.get(sku) for sku in skus})
