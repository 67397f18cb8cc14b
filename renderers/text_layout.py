"""Fitting text into a box: word wrapping, shrink-to-fit and ellipsis truncation.

Pure measurement with the font's real metrics, at the pixel size the text will be drawn
(block size * scale), so what is measured here is exactly what gets drawn. Nothing is
drawn here.

A block of n lines is (n - 1) * pitch + (ascent + descent) tall: the first line's
ascender touches the top of the block and the last line's descender its bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import ImageFont

from renderers.resources import FontFace, load_font

ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class TextLayout:
    """Where the text goes: the chosen size and the lines, measured in canvas pixels."""

    size: int  # font size, block pixels (draw at size * scale)
    lines: tuple[str, ...]
    widths: tuple[float, ...]  # each line's advance width, canvas pixels
    pitch: float  # baseline to baseline, canvas pixels
    height: float  # the whole block of lines, canvas pixels
    truncated: bool  # some text did not fit and the last line ends with an ellipsis


@dataclass(frozen=True, slots=True)
class _Attempt:
    font: ImageFont.FreeTypeFont
    lines: list[str]  # at most capacity + 1: one more than fits says "does not fit"
    capacity: int  # lines that fit in the box height (and max_lines)

    @property
    def fits(self) -> bool:
        return 0 < len(self.lines) <= self.capacity


def layout_text(
    text: str,
    face: FontFace,
    width: int,
    height: int,
    *,
    size: int,
    min_size: int,
    line_height: float = 1.2,
    max_lines: int | None = None,
    shrink: bool = True,
    scale: int = 1,
) -> TextLayout:
    """Lay `text` out in a `width` x `height` box (block pixels).

    With `shrink`, the largest size from `min_size` to `size` at which every line fits;
    otherwise (or if nothing fits even at `min_size`) the lines that fit, the last one
    ending in an ellipsis. `max_lines` caps the number of lines.
    """
    paragraphs = [paragraph.split() for paragraph in text.split("\n")]
    attempts: dict[int, _Attempt] = {}

    def attempt(block_size: int) -> _Attempt:
        if block_size not in attempts:
            font = load_font(face, block_size * scale)
            capacity = _capacity(font, block_size * scale * line_height, height * scale, max_lines)
            lines = _wrap(paragraphs, font, width * scale, limit=max(capacity, 1) + 1)
            attempts[block_size] = _Attempt(font, lines, capacity)
        return attempts[block_size]

    low, high = min(min_size, size), size
    chosen = high
    if shrink and not attempt(high).fits:
        if attempt(low).fits:
            # A smaller size never fits worse, so bisect: low always fits, high never does.
            while high - low > 1:
                middle = (low + high) // 2
                if attempt(middle).fits:
                    low = middle
                else:
                    high = middle
        chosen = low
    return _finish(attempt(chosen), chosen, width * scale, chosen * scale * line_height)


def _capacity(
    font: ImageFont.FreeTypeFont, pitch: float, height_px: int, max_lines: int | None
) -> int:
    ascent, descent = font.getmetrics()
    room = height_px - (ascent + descent)
    capacity = 0 if room < 0 else int(room // pitch) + 1
    return capacity if max_lines is None else min(capacity, max_lines)


def _wrap(
    paragraphs: list[list[str]], font: ImageFont.FreeTypeFont, width_px: int, *, limit: int
) -> list[str]:
    """Greedy word wrap to `width_px`; stops once it has `limit` lines."""
    lines: list[str] = []
    for words in paragraphs:
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width_px:
                line = candidate
                continue
            if line:
                lines.append(line)
            pieces = _break_word(word, font, width_px)
            lines.extend(pieces[:-1])
            line = pieces[-1]
            if len(lines) >= limit:
                return lines[:limit]
        lines.append(line)  # an empty paragraph is an empty line: "\n\n" keeps its gap
        if len(lines) >= limit:
            return lines[:limit]
    return lines


def _break_word(word: str, font: ImageFont.FreeTypeFont, width_px: int) -> list[str]:
    """`word` cut into pieces that each fit `width_px` (at least one character each)."""
    pieces: list[str] = []
    while font.getlength(word) > width_px:
        cut = _longest_prefix(word, lambda prefix: font.getlength(prefix) <= width_px)
        pieces.append(word[:cut])
        word = word[cut:]
    pieces.append(word)
    return pieces


def _ellipsize(line: str, font: ImageFont.FreeTypeFont, width_px: int) -> str:
    """`line` shortened (whole words first, then characters) so that it fits with an ellipsis."""

    def fits(candidate: str) -> bool:
        return font.getlength(candidate.rstrip() + ELLIPSIS) <= width_px

    line = line.rstrip()
    while " " in line and not fits(line):
        line = line.rsplit(" ", 1)[0].rstrip()
    if line and not fits(line):
        line = line[: _longest_prefix(line, fits)] if fits(line[:1]) else ""
    return line.rstrip() + ELLIPSIS


def _longest_prefix(word: str, fits: Callable[[str], bool]) -> int:
    """The length of the longest prefix of `word` that `fits`, at least 1 (bisection)."""
    low, high = 1, len(word)  # invariant: the answer is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if fits(word[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


def _finish(attempt: _Attempt, size: int, width_px: int, pitch: float) -> TextLayout:
    keep = max(attempt.capacity, 1)  # a box lower than one line still shows (clipped) text
    lines = attempt.lines[:keep]
    truncated = len(attempt.lines) > keep
    if truncated:
        lines[-1] = _ellipsize(lines[-1], attempt.font, width_px)
    ascent, descent = attempt.font.getmetrics()
    return TextLayout(
        size=size,
        lines=tuple(lines),
        widths=tuple(attempt.font.getlength(line) for line in lines),
        pitch=pitch,
        height=(len(lines) - 1) * pitch + ascent + descent,
        truncated=truncated,
    )
