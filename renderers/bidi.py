"""Bidirectional text: which characters of a line run right to left, and the display order.

A compact form of the Unicode Bidirectional Algorithm (UAX #9) for one paragraph: the
paragraph direction from its first strong character (P2, P3), weak types (W1-W7),
neutrals (N1, N2), implicit levels (I1, I2), trailing whitespace (L1) and reordering
(L2). Explicit embeddings and isolates (RLE, LRI, ...) are treated as neutrals: names
and marketing lines do not use them, and the full algorithm is much longer.

Why not leave it to Pillow's RAQM? RAQM orders one string drawn with one font; a line
whose characters come from several fonts (Hebrew from one, a Latin name from another)
is drawn as several runs, and their order is decided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from unicodedata import bidirectional

_STRONG = ("L", "R", "AL")
_NUMBER = ("EN", "AN")
_EXPLICIT = ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")
# Whitespace-like types that take the paragraph level at the end of a line (L1).
_TRAILING = ("WS", "S", "B", "BN", *_EXPLICIT)


def is_rtl(text: str) -> bool:
    """Whether a paragraph is right to left: its first strong character is (P2, P3)."""
    for char in text:
        kind = bidirectional(char)
        if kind == "L":
            return False
        if kind in ("R", "AL"):
            return True
    return False


def embedding_levels(text: str, rtl: bool) -> list[int]:
    """The level of each character of `text` (one line): odd levels run right to left."""
    base = 1 if rtl else 0
    edge = "R" if rtl else "L"  # sor and eor: no embeddings, so both are the paragraph's
    original = [bidirectional(char) or "L" for char in text]
    types = [_explicit_as_neutral(kind) for kind in original]
    _resolve_weak(types, edge)
    _resolve_neutral(types, edge)
    levels = [_implicit(kind, base) for kind in types]
    for index in range(len(text) - 1, -1, -1):  # L1: trailing whitespace
        if original[index] not in _TRAILING:
            break
        levels[index] = base
    return levels


def display_order(levels: Sequence[int]) -> list[int]:
    """The indices of items at `levels` in left-to-right display order (L2)."""
    order = list(range(len(levels)))
    current = list(levels)
    odd = [level for level in levels if level % 2]
    if not odd:
        return order
    for level in range(max(levels), min(odd) - 1, -1):
        start = 0
        while start < len(current):
            if current[start] < level:
                start += 1
                continue
            end = start
            while end < len(current) and current[end] >= level:
                end += 1
            order[start:end] = order[start:end][::-1]
            current[start:end] = current[start:end][::-1]
            start = end
    return order


def _explicit_as_neutral(kind: str) -> str:
    return "ON" if kind in _EXPLICIT else kind


def _resolve_weak(types: list[str], edge: str) -> None:
    """W1-W7, in place."""
    previous = edge
    for index, kind in enumerate(types):  # W1: a mark takes the type before it
        if kind == "NSM":
            types[index] = previous
        previous = types[index]
    strong = edge
    for index, kind in enumerate(types):  # W2: European digits after Arabic letters
        if kind in _STRONG:
            strong = kind
        elif kind == "EN" and strong == "AL":
            types[index] = "AN"
    for index, kind in enumerate(types):  # W3
        if kind == "AL":
            types[index] = "R"
    for index in range(1, len(types) - 1):  # W4: 1,000 and 1+2
        before, kind, after = types[index - 1], types[index], types[index + 1]
        if kind == "ES" and before == after == "EN":
            types[index] = "EN"
        elif kind == "CS" and before == after and before in _NUMBER:
            types[index] = before
    index = 0
    while index < len(types):  # W5: currency and percent signs next to digits
        if types[index] != "ET":
            index += 1
            continue
        end = index
        while end < len(types) and types[end] == "ET":
            end += 1
        touches_digit = (index > 0 and types[index - 1] == "EN") or (
            end < len(types) and types[end] == "EN"
        )
        if touches_digit:
            types[index:end] = ["EN"] * (end - index)
        index = end
    for index, kind in enumerate(types):  # W6
        if kind in ("ES", "ET", "CS"):
            types[index] = "ON"
    strong = edge
    for index, kind in enumerate(types):  # W7: digits in left-to-right text are letters
        if kind in ("L", "R"):
            strong = kind
        elif kind == "EN" and strong == "L":
            types[index] = "L"


def _resolve_neutral(types: list[str], edge: str) -> None:
    """N1, N2, in place: neutrals between two of one direction take it, else the paragraph's."""
    index = 0
    while index < len(types):
        if types[index] in ("L", "R", "EN", "AN"):
            index += 1
            continue
        end = index
        while end < len(types) and types[end] not in ("L", "R", "EN", "AN"):
            end += 1
        before = edge if index == 0 else _direction(types[index - 1])
        after = edge if end == len(types) else _direction(types[end])
        types[index:end] = [before if before == after else edge] * (end - index)
        index = end


def _direction(kind: str) -> str:
    return "L" if kind == "L" else "R"


def _implicit(kind: str, base: int) -> int:
    """I1, I2."""
    if base == 0:
        return {"R": 1, "AN": 2, "EN": 2}.get(kind, 0)
    return 2 if kind in ("L", "EN", "AN") else 1
