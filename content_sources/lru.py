"""A map that forgets its least recently used entries past a limit."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


class LRU(Generic[K, V]):
    """Entries by key, the least recently used dropped first once their total weight
    passes `limit`: one per entry by default, or what `weigh` says (bytes, say)."""

    def __init__(self, limit: int, weigh: Callable[[V], int] = _one) -> None:
        self._limit = limit
        self._weigh = weigh
        self._total = 0
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        weight = self._weigh(value)
        if weight > self._limit // 4:
            return  # one huge entry must not flush everything else
        old = self._items.pop(key, None)
        if old is not None:
            self._total -= self._weigh(old)
        self._items[key] = value
        self._total += weight
        while self._total > self._limit:
            _, evicted = self._items.popitem(last=False)
            self._total -= self._weigh(evicted)
