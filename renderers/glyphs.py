"""What a font face can draw and how: its characters, colour, weight, and FreeType handles.

The characters come from the font's own cmap (read with fontTools), so the choice of
face for each character is exact: a face is only asked for characters it has, and no
text is drawn as boxes. FreeType fonts are opened once per face and pixel size.

Colour bitmap fonts (Noto Color Emoji's CBDT) exist at fixed sizes only; such a face is
opened at its size and the drawing is scaled (see `renderers.runs`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fontTools.ttLib import TTFont, TTLibError
from PIL import ImageFont, features

from renderers.fonts import FontError, FontFace

# RAQM shapes complex scripts (Arabic, Devanagari, ...) and lays out right-to-left runs;
# Pillow's wheels have it when the system has libfribidi. BASIC is the fallback.
RAQM = features.check("raqm")
_LAYOUT_ENGINE = ImageFont.Layout.RAQM if RAQM else ImageFont.Layout.BASIC
_COLOUR_TABLES = ("COLR", "CBDT", "sbix")
_REGULAR = 400


@dataclass(frozen=True, slots=True)
class FaceInfo:
    """What one face offers."""

    characters: frozenset[int]  # code points the cmap maps
    colour: bool  # draws its own colours (emoji): drawn with embedded colour
    strike: int | None  # the only pixel size of a bitmap-only face, else None
    weight: int  # OS/2 weight class: 400 regular, 700 bold


@functools.lru_cache(maxsize=512)
def face_info(face: FontFace) -> FaceInfo:
    """The characters, colour and sizes of `face`; FontError if the file is not a font."""
    try:
        # Opened here, not by fontTools, so that a file that is no font is closed too.
        with open(face.path, "rb") as file, TTFont(file, fontNumber=face.index, lazy=True) as font:
            characters = frozenset(font.getBestCmap() or {})
            tables = set(font.keys())
            strike = None
            if "CBLC" in tables and "glyf" not in tables and "CFF " not in tables:
                strike = max(s.bitmapSizeTable.ppemY for s in font["CBLC"].strikes)
            weight = int(font["OS/2"].usWeightClass) if "OS/2" in tables else _REGULAR
    except (OSError, TTLibError, KeyError, AttributeError, ValueError) as exc:
        raise FontError(f"font {face.name!r} ({face.path}) cannot be read: {exc}") from None
    return FaceInfo(characters, any(t in tables for t in _COLOUR_TABLES), strike, weight)


@functools.lru_cache(maxsize=1024)
def load_font(face: FontFace, size_px: int) -> ImageFont.FreeTypeFont:
    """The FreeType font for `face` at `size_px` pixels (its strike size for bitmap faces).

    Opened once and then reused. Sharing a FreeTypeFont between threads is safe only
    because Pillow holds the GIL while it uses the face; a free-threaded build would
    need a lock per face.
    """
    strike = face_info(face).strike
    try:
        font = ImageFont.truetype(
            face.path, strike or size_px, index=face.index, layout_engine=_LAYOUT_ENGINE
        )
    except OSError as exc:
        raise FontError(f"font {face.name!r} ({face.path}) cannot be opened: {exc}") from None
    if face.weight is not None:
        _set_weight(font, face.weight)
    return font


def drawn_px(face: FontFace, size_px: int) -> tuple[ImageFont.FreeTypeFont, float]:
    """The font to draw `face` with at `size_px`, and the factor its drawing must be scaled by."""
    font = load_font(face, size_px)
    strike = face_info(face).strike
    return font, (size_px / strike if strike else 1.0)


def _set_weight(font: ImageFont.FreeTypeFont, weight: int) -> None:
    try:
        axes = font.get_variation_axes()
    except OSError:  # not a variable font: it has the weight it has
        return
    values: list[float] = []
    for axis in axes:
        low, high, default = axis["minimum"] or 0, axis["maximum"] or 0, axis["default"] or 0
        if axis["name"] in (b"Weight", "Weight"):
            values.append(min(max(weight, low), high))
        else:
            values.append(default)
    font.set_variation_by_axes(values)
