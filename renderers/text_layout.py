"""Fitting text into a box: word wrapping, shrink-to-fit and ellipsis truncation.

Pure measurement with the fonts' real metrics, at the pixel size the text will be drawn
(block size * scale). Nothing is drawn here. Text is measured in its font stack: each
piece with the face that will draw it (`renderers.runs`); line height and baseline come
from the stack's first face.

A block of n lines is (n - 1) * pitch + (ascent + descent) tall: the first line's
ascender touches the top of the block and the last line's descender its bottom.

Speed: shaping a string with RAQM costs about the same whatever its length, so the
number of measurements is what counts. Each word is measured once per layout (RAQM
advances scale linearly with the size, so one measurement serves every size tried),
lines are wrapped by adding word widths, and the size is found by bisection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import ImageFont

from renderers.bidi import is_rtl
from renderers.fonts import FontStack
from renderers.glyphs import load_font
from renderers.runs import Ruler

ELLIPSIS = "…"
# More than any box shows legibly; bounds the work runaway template data can cause.
MAX_CHARS = 5000
# Wrapping adds up word widths; leave room for rounding and kerning around spaces.
_WIDTH_SLACK = 0.99


@dataclass(frozen=True, slots=True)
class TextLayout:
    """Where the text goes: the chosen size and the lines, measured in canvas pixels."""

    size: int  # font size, block pixels (draw at size * scale)
    lines: tuple[str, ...]
    pitch: float  # baseline to baseline, canvas pixels
    height: float  # the whole block of lines, canvas pixels
    truncated: bool  # some text did not fit and the last line ends with an ellipsis
    ascent: float  # the first baseline's distance below the top of the block, canvas pixels
    rtl: bool  # the paragraph runs right to left (its first strong character does)
    ruler: Ruler  # measures the lines, at `px`
    px: int  # font size, canvas pixels

    def line_width(self, index: int) -> float:
        """Line `index`'s advance width in canvas pixels (measured when asked: a
        left-aligned line never needs it)."""
        return self.ruler.width(self.lines[index], self.px)


@dataclass(frozen=True, slots=True)
class _Attempt:
    px: int  # font size, canvas pixels
    lines: list[str]  # at most capacity + 1: one more than fits says "does not fit"
    capacity: int  # lines that fit in the box height (and max_lines)
    complete: bool  # the whole text was wrapped (it was not cut at MAX_CHARS)

    @property
    def fits(self) -> bool:
        return self.complete and 0 < len(self.lines) <= self.capacity


def layout_text(
    text: str,
    stack: FontStack,
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
    complete = len(text) <= MAX_CHARS
    paragraphs = [paragraph.split() for paragraph in text[:MAX_CHARS].split("\n")]
    ruler = Ruler(stack, size * scale)
    attempts: dict[int, _Attempt] = {}

    def attempt(block_size: int) -> _Attempt:
        if block_size not in attempts:
            px = block_size * scale
            capacity = _capacity(
                load_font(stack.primary, px), px * line_height, height * scale, max_lines
            )
            budget = width * scale * _WIDTH_SLACK
            lines = _wrap(paragraphs, ruler, px, budget, limit=max(capacity, 1) + 1)
            attempts[block_size] = _Attempt(px, lines, capacity, complete)
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
    return _finish(attempt(chosen), ruler, chosen, width * scale, line_height, is_rtl(text))


def _capacity(
    font: ImageFont.FreeTypeFont, pitch: float, height_px: int, max_lines: int | None
) -> int:
    ascent, descent = font.getmetrics()
    room = height_px - (ascent + descent)
    capacity = 0 if room < 0 else int(room // pitch) + 1
    return capacity if max_lines is None else min(capacity, max_lines)


def _wrap(
    paragraphs: list[list[str]], ruler: Ruler, px: int, budget: float, *, limit: int
) -> list[str]:
    """Greedy word wrap to `budget` pixels; stops once it has `limit` lines."""
    space = ruler.width(" ", px)
    lines: list[str] = []
    for words in paragraphs:
        joined = " ".join(words)
        at_most = ruler.width_at_most(joined, px)
        if at_most is not None and at_most <= budget:
            # Surely one line: the word-by-word wrap below would give the same line
            # after shaping every word (a greeting's name, mostly).
            lines.append(joined)
            if len(lines) >= limit:
                return lines[:limit]
            continue
        line: list[str] = []
        used = 0.0
        for word in words:
            word_width = ruler.width(word, px)
            if line and used + space + word_width <= budget:
                line.append(word)
                used += space + word_width
                continue
            if line:
                lines.append(" ".join(line))
            if word_width <= budget:
                line, used = [word], word_width
            else:
                *whole, rest = _break_word(word, ruler, px, budget)
                lines.extend(whole)
                line, used = [rest], ruler.width(rest, px)
            if len(lines) >= limit:
                return lines[:limit]
        lines.append(" ".join(line))  # an empty paragraph is an empty line: "\n\n" keeps its gap
        if len(lines) >= limit:
            return lines[:limit]
    return lines


def _break_word(word: str, ruler: Ruler, px: int, budget: float) -> list[str]:
    """`word` cut into pieces that each fit `budget` (at least one character each)."""
    # Adding up character widths ignores kerning inside the word; a word too long for
    # its box is a rare and already degraded case, and the box clips anyway.
    pieces: list[str] = []
    start, used = 0, 0.0
    for index, char in enumerate(word):
        char_width = ruler.width(char, px)
        if index > start and used + char_width > budget:
            pieces.append(word[start:index])
            start, used = index, 0.0
        used += char_width
    pieces.append(word[start:])
    return pieces


def _ellipsize(line: str, ruler: Ruler, px: int, width_px: int) -> str:
    """`line` shortened (whole words first, then characters) so that it fits with an ellipsis."""

    def fits(candidate: str) -> bool:
        return ruler.width(candidate.rstrip() + ELLIPSIS, px) <= width_px

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


def _finish(
    attempt: _Attempt, ruler: Ruler, size: int, width_px: int, line_height: float, rtl: bool
) -> TextLayout:
    keep = max(attempt.capacity, 1)  # a box lower than one line still shows (clipped) text
    lines = attempt.lines[:keep]
    truncated = len(attempt.lines) > keep or not attempt.complete
    if truncated:
        lines[-1] = _ellipsize(lines[-1], ruler, attempt.px, width_px)
    ascent, descent = load_font(ruler.stack.primary, attempt.px).getmetrics()
    pitch = attempt.px * line_height
    return TextLayout(
        size=size,
        lines=tuple(lines),
        pitch=pitch,
        height=(len(lines) - 1) * pitch + ascent + descent,
        truncated=truncated,
        ascent=ascent,
        rtl=rtl,
        ruler=ruler,
        px=attempt.px,
    )
