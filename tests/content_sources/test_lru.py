"""The bounded map behind the render cache's memory tier and the remembered choices."""

from __future__ import annotations

from content_sources.lru import LRU


def test_the_least_recently_used_entry_goes_first() -> None:
    memo: LRU[str, int] = LRU(8)
    for i in range(8):
        memo.put(f"k{i}", i)
    assert memo.get("k0") == 0  # now the most recent
    memo.put("k8", 8)
    assert memo.get("k1") is None
    assert [memo.get(f"k{i}") for i in (0, 2, 8)] == [0, 2, 8]


def test_entries_can_weigh_their_size_in_bytes() -> None:
    cache: LRU[str, bytes] = LRU(100, len)
    cache.put("a", b"x" * 20)
    cache.put("b", b"x" * 20)
    cache.put("a", b"x" * 25)  # replacing an entry counts its new size only
    for key in "cdef":
        cache.put(key, b"x" * 15)
    assert cache.get("b") is None  # 20 + 25 + 4 * 15 passed 100: the oldest went
    assert cache.get("a") == b"x" * 25
    assert all(cache.get(key) is not None for key in "cdef")


def test_one_huge_entry_does_not_flush_the_rest() -> None:
    cache: LRU[str, bytes] = LRU(100, len)
    cache.put("small", b"x" * 10)
    cache.put("huge", b"x" * 60)
    assert cache.get("huge") is None
    assert cache.get("small") == b"x" * 10
