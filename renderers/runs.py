"""Text runs: a text cut into pieces that are each drawn with one face in one direction.

Each character is drawn by the first face of the stack that has it (per-glyph
fallback), with three refinements that keep text readable:

- a character and the marks, variation selectors and joiners after it (a cluster) go
  to one face, so accents stay on their letters and emoji sequences stay whole;
- spaces, digits and punctuation stay in the face of the run they are in, so an Arabic
  phrase is shaped as one piece across its spaces and a name keeps its comma;
- a cluster asking for emoji presentation (U+FE0F, a keycap) prefers a colour face.

Invisible format characters that no face has (a zero-width space) are left out. A
visible character that no face has is an error (UncoveredTextError), never a box.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from renderers.bidi import display_order, embedding_levels
from renderers.fonts import FontFace, FontStack
from renderers.glyphs import RAQM, face_info, load_font

_ZWJ = "\u200d"
# Scripts written right to left (Hebrew to NKo, their presentation forms, and the
# historic ones of the supplementary planes): text without them needs no bidi.
_RIGHT_TO_LEFT = re.compile(
    "[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff\U00010800-\U00010fff\U0001e800-\U0001efff]"
)
_EMOJI_PRESENTATION = ("\ufe0f", "\u20e3")
# The most a kerning pair (or a ligature) may widen text, in ems: the bundled faces
# widen by at most 0.025 em (Roboto's "rt"); twice that bounds `Ruler.width_at_most`.
_MAX_KERN_EM = 0.05
# Characters whose shaped width is their advances plus kerning: Latin, Greek, Cyrillic
# and the scripts before Hebrew, with no combining marks.
_SIMPLE_BELOW = 0x0590
_MARKS = ("Mn", "Mc", "Me")


class UncoveredTextError(ValueError):
    """A character that no face of the stack has."""

    def __init__(self, char: str, stack: FontStack) -> None:
        name = unicodedata.name(char, "unnamed")
        super().__init__(f"no font of {stack.name!r} has the character U+{ord(char):04X} ({name})")
        self.char = char


@dataclass(frozen=True, slots=True)
class Run:
    """Characters in logical order, drawn with `face`; `rtl` runs are laid out right to left."""

    text: str
    face: FontFace
    rtl: bool = False


def clusters(text: str) -> list[str]:
    """`text` cut where a new visible unit starts: marks, joiners and selectors stay attached."""
    pieces: list[str] = []
    for char in text:
        if pieces and (_continues(char) or pieces[-1].endswith(_ZWJ) or _pairs(pieces[-1], char)):
            pieces[-1] += char
        else:
            pieces.append(char)
    return pieces


def itemize(text: str, stack: FontStack) -> list[Run]:
    """The runs of `text` in logical order, split only where the face changes (for measuring).

    Raises UncoveredTextError for a visible character that no face of `stack` has.
    """
    if _primary_has_all(text, stack):  # most texts: one face, no need to look closer
        return [Run(text, stack.primary)] if text else []
    return _merged(_faced_clusters(text, stack), None)[0]


def line_runs(text: str, stack: FontStack, *, rtl: bool) -> list[Run]:
    """The runs of one line as they are shown, left to right, each with its direction.

    `rtl` is the paragraph's direction (`renderers.bidi.is_rtl`). Raises UncoveredTextError.
    """
    if not rtl and _primary_has_all(text, stack) and not _RIGHT_TO_LEFT.search(text):
        return [Run(text, stack.primary)] if text else []
    faced = _faced_clusters(text, stack)
    char_levels = iter(embedding_levels("".join(cluster for cluster, _ in faced), rtl))
    levels = [max(next(char_levels) for _ in cluster) for cluster, _ in faced]
    runs, run_levels = _merged(faced, levels)
    return [runs[index] for index in display_order(run_levels)]


def shaped(run: Run) -> tuple[str, str | None]:
    """The string to hand to Pillow for `run`, and the direction to lay it out in.

    Without RAQM Pillow lays text out left to right only: a right-to-left run is
    reversed here, cluster by cluster (correct for Hebrew; Arabic letters then show in
    their unjoined forms).
    """
    if RAQM:
        return run.text, "rtl" if run.rtl else "ltr"
    if run.rtl:
        return "".join(reversed(clusters(run.text))), None
    return run.text, None


class Ruler:
    """Advance widths of strings in one stack at any pixel size.

    RAQM advances are unhinted, so they scale linearly with the size: one measurement
    at `reference_px` serves every size. BASIC ones are hinted per size and are measured
    at each size; bitmap faces are measured at their only size. Measurements are kept
    for the process (`advance`): a greeting's "Hello" is shaped once, not per open.
    """

    def __init__(self, stack: FontStack, reference_px: int) -> None:
        self.stack = stack
        self._reference_px = reference_px
        self._runs: dict[str, list[Run]] = {}

    def runs(self, text: str) -> list[Run]:
        runs = self._runs.get(text)
        if runs is None:
            runs = itemize(text, self.stack)
            self._runs[text] = runs
        return runs

    def width(self, text: str, px: int) -> float:
        return sum(self.run_width(run, px) for run in self.runs(text))

    def width_at_most(self, text: str, px: int) -> float | None:
        """An upper bound of `text`'s width at `px`, without shaping `text` itself: its
        characters' advances (each shaped once per process) plus the most that kerning
        could add between each pair. None when only shaping can tell: text in several
        faces, marks or joiners, scripts that shape (from Hebrew on), no RAQM."""
        runs = self.runs(text)
        if not RAQM or len(runs) != 1 or runs[0].rtl or not _simple(text):
            return None
        face = runs[0].face
        if face_info(face).strike:
            return None
        measured_px = self._reference_px
        letters = sum(advance(Run(char, face), measured_px) for char in text)
        kerning = max(0, len(text) - 1) * _MAX_KERN_EM * measured_px
        return (letters + kerning) * px / measured_px

    def run_width(self, run: Run, px: int) -> float:
        strike = face_info(run.face).strike
        measured_px = strike or (self._reference_px if RAQM else px)
        return advance(run, measured_px) * px / measured_px


@functools.lru_cache(maxsize=65_536)
def advance(run: Run, px: int) -> float:
    """`run`'s advance width at `px` pixels. Shaping costs about the same whatever the
    length of the text, so each string is shaped once per process and size."""
    string, direction = shaped(run)
    return float(load_font(run.face, px).getlength(string, direction=direction))


def _faced_clusters(text: str, stack: FontStack) -> list[tuple[str, FontFace]]:
    """Each cluster of `text` with the face that draws it; invisible ones no face has dropped."""
    faced: list[tuple[str, FontFace]] = []
    current: FontFace | None = None
    for cluster in clusters(text):
        face = _face_for(cluster, stack, current)
        characters = face_info(face).characters
        kept = "".join(c for c in cluster if _visible(c) or ord(c) in characters)
        if kept:
            faced.append((kept, face))
            current = face
    return faced


def _merged(
    faced: list[tuple[str, FontFace]], levels: list[int] | None
) -> tuple[list[Run], list[int]]:
    """Neighbouring clusters of one face (and one level) joined into runs, with each run's level."""
    runs: list[Run] = []
    run_levels: list[int] = []
    for index, (cluster, face) in enumerate(faced):
        level = levels[index] if levels is not None else 0
        if runs and runs[-1].face == face and run_levels[-1] == level:
            runs[-1] = Run(runs[-1].text + cluster, face, runs[-1].rtl)
        else:
            runs.append(Run(cluster, face, bool(level % 2)))
            run_levels.append(level)
    return runs, run_levels


def _simple(text: str) -> bool:
    return all(ord(char) < _SIMPLE_BELOW and not unicodedata.combining(char) for char in text)


def _primary_has_all(text: str, stack: FontStack) -> bool:
    return face_info(stack.primary).characters.issuperset(map(ord, text))


def _face_for(cluster: str, stack: FontStack, current: FontFace | None) -> FontFace:
    needed = [ord(c) for c in cluster if _visible(c)]
    if not needed:
        return current or stack.primary
    base = cluster[0]
    if current is not None and not _is_letter(base) and _has(current, needed):
        return current
    faces = stack.faces
    if any(mark in cluster for mark in _EMOJI_PRESENTATION):
        faces = tuple(sorted(faces, key=lambda face: not face_info(face).colour))
    for face in faces:
        if _has(face, needed):
            return face
    for face in faces:  # a mark no face has with its letter: the letter still shows
        if _has(face, needed[:1]):
            return face
    raise UncoveredTextError(chr(needed[0]), stack)


def _has(face: FontFace, code_points: list[int]) -> bool:
    characters = face_info(face).characters
    return all(point in characters for point in code_points)


def _continues(char: str) -> bool:
    """Whether `char` belongs to the cluster before it."""
    point = ord(char)
    return (
        unicodedata.category(char) in _MARKS
        or char == _ZWJ
        or 0xFE00 <= point <= 0xFE0F  # variation selectors
        or 0x1F3FB <= point <= 0x1F3FF  # skin tones
        or 0xE0020 <= point <= 0xE007F  # tags (subdivision flags)
        or 0xE0100 <= point <= 0xE01EF  # more variation selectors
    )


def _pairs(previous: str, char: str) -> bool:
    """Regional indicators pair up into flags."""
    return _regional(char) and len(previous) == 1 and _regional(previous)


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _visible(char: str) -> bool:
    """Drawn characters need a glyph; format characters (joiners, selectors) do not."""
    point = ord(char)
    return not (
        unicodedata.category(char) in ("Cf", "Cc")
        or 0xFE00 <= point <= 0xFE0F
        or 0xE0100 <= point <= 0xE01EF
    )


def _is_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L") or ord(char) >= 0x1F000
