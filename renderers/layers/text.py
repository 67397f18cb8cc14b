"""The "text" layer: text wrapped, fitted and aligned inside a box, never drawn outside it."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

from renderers import fields
from renderers.fields import BOX, RGBA, Box, Field, FieldError
from renderers.fonts import FontStack
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.paint import scaled
from renderers.pen import Pen
from renderers.resources import default_stack
from renderers.runs import UncoveredTextError, itemize, line_runs
from renderers.text_layout import layout_text

if TYPE_CHECKING:
    from PIL import Image

Align = Literal["left", "center", "right", "start", "end"]
VAlign = Literal["top", "middle", "bottom"]
Fit = Literal["shrink", "none"]
Transform = Literal["none", "upper", "lower", "title"]
ALIGNS: tuple[Align, ...] = ("left", "center", "right", "start", "end")
TRANSFORMS: tuple[Transform, ...] = ("none", "upper", "lower", "title")

MAX_STROKE = 20


# The stack of a text layer without `font`: `sans` (Roboto Regular) and the fallback chain.
DEFAULT_FACE = default_stack()


@dataclass(frozen=True, slots=True)
class TextLayer(Layer):
    kind: ClassVar[str] = "text"
    box: Box
    text: str  # after `transform`, in NFC
    size: int  # the largest size, block pixels
    min_size: int  # the smallest size shrinking may choose
    color: RGBA
    font: FontStack
    align: Align
    valign: VAlign
    fit: Fit
    line_height: float  # baseline to baseline, in multiples of the size
    max_lines: int | None  # None: as many as fit
    stroke_width: int  # a halo this wide around the glyphs, block pixels; 0: none
    stroke_color: RGBA


def _default_min_size(size: int) -> int:
    """The smallest size shrinking goes to when the layer does not say: half, but legible."""
    return min(size, max(8, size // 2))


def transformed(text: str, transform: Transform) -> str:
    """`text` in the case `transform` asks for; `title` capitalises each word's first letter only.

    Like CSS `capitalize`: "mcDonald" stays "McDonald" and "o'neil" becomes "O'neil".
    """
    if transform == "upper":
        return text.upper()
    if transform == "lower":
        return text.lower()
    if transform == "title":
        return " ".join(word[:1].upper() + word[1:] for word in text.split(" "))
    return text


# Fields other kinds share (a countdown, codes): black text in the default stack.
FONT: Field[FontStack] = Field("font", fields.font, default=DEFAULT_FACE)
COLOR: Field[RGBA] = Field("color", fields.color, default=(0, 0, 0, 255))

TEXT: Field[str] = Field("text", fields.text)
SIZE: Field[int] = Field("size", fields.int_range(4, 400), default=32, templated=False)
MIN_SIZE: Field[int | None] = Field(
    "min_size", fields.int_range(4, 400), default=None, templated=False
)
ALIGN: Field[Align] = Field("align", fields.choice(*ALIGNS), default="left")
VALIGN: Field[VAlign] = Field("valign", fields.choice("top", "middle", "bottom"), default="top")
FIT: Field[Fit] = Field("fit", fields.choice("shrink", "none"), default="shrink")
LINE_HEIGHT: Field[float] = Field(
    "line_height", fields.number_range(0.8, 3.0), default=1.2, templated=False
)
MAX_LINES: Field[int | None] = Field(
    "max_lines", fields.int_range(1, 50), default=None, templated=False
)
TRANSFORM: Field[Transform] = Field("transform", fields.choice(*TRANSFORMS), default="none")
STROKE_WIDTH: Field[int] = Field(
    "stroke_width", fields.int_range(0, MAX_STROKE), default=0, templated=False
)
STROKE_COLOR: Field[RGBA] = Field("stroke_color", fields.color, default=(255, 255, 255, 255))


class TextKind(LayerKind[TextLayer]):
    layer_type = TextLayer
    fields = (
        BOX,
        TEXT,
        SIZE,
        MIN_SIZE,
        COLOR,
        FONT,
        ALIGN,
        VALIGN,
        FIT,
        LINE_HEIGHT,
        MAX_LINES,
        TRANSFORM,
        STROKE_WIDTH,
        STROKE_COLOR,
    )
    draws_inside_box = True

    def build(self, values: FieldValues) -> TextLayer:
        """The layer; FieldError if a character of the text is in no font of the stack."""
        size, min_size, stack = values[SIZE], values[MIN_SIZE], values[FONT]
        text = unicodedata.normalize("NFC", transformed(values[TEXT], values[TRANSFORM]))
        try:
            itemize(text, stack)
        except UncoveredTextError as exc:
            raise FieldError(str(exc), field=TEXT.name) from None
        return TextLayer(
            box=values[BOX],
            text=text,
            size=size,
            # A min_size above size would mean "grow"; shrinking never does that.
            min_size=_default_min_size(size) if min_size is None else min(min_size, size),
            color=values[COLOR],
            font=stack,
            align=values[ALIGN],
            valign=values[VALIGN],
            fit=values[FIT],
            line_height=values[LINE_HEIGHT],
            max_lines=values[MAX_LINES],
            stroke_width=values[STROKE_WIDTH],
            stroke_color=values[STROKE_COLOR],
        )

    def paint(self, canvas: Image.Image, text: TextLayer, scale: int, now: datetime | None) -> None:
        box = scaled(text.box, scale)
        visible = box.clip(canvas)
        if visible is None:
            return
        layout = layout_text(
            text.text,
            text.font,
            text.box[2],
            text.box[3],
            size=text.size,
            min_size=text.min_size,
            line_height=text.line_height,
            max_lines=text.max_lines,
            shrink=text.fit == "shrink",
            scale=scale,
        )
        px = layout.size * scale
        # Glyph coverage is drawn into masks the size of the visible box, which clips
        # the text to its box (and to the canvas) for free.
        pen = Pen((visible.width, visible.height), text.stroke_width * scale)
        top = box.top + _offset(text.valign, box.height - layout.height) + layout.ascent
        align = _physical(text.align, layout.rtl)
        for index, line in enumerate(layout.lines):
            left: float = box.left
            if align != "left":
                left += _offset(align, box.width - layout.line_width(index))
            # Whole-pixel baselines keep horizontal strokes crisp.
            baseline = round(top + index * layout.pitch)
            runs = line_runs(line, text.font, rtl=layout.rtl)
            pen.line(runs, layout.ruler, round(left) - visible.left, baseline - visible.top, px)
        pen.paint(canvas, (visible.left, visible.top), text.color, text.stroke_color)


def _physical(align: Align, rtl: bool) -> Align:
    """`start` and `end` follow the text's direction: `start` is the right in Arabic or Hebrew."""
    if align == "start":
        return "right" if rtl else "left"
    if align == "end":
        return "left" if rtl else "right"
    return align


def _offset(where: str, room: float) -> float:
    """How far to move a line (or the block of lines) into `room` spare pixels."""
    if where in ("center", "middle"):
        return room / 2
    if where in ("right", "bottom"):
        return room
    return 0.0
