"""The "text" layer: text wrapped, fitted and aligned inside a box, never drawn outside it."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from renderers import fields
from renderers.fields import RGBA, Box, Field, FieldError
from renderers.fonts import FontStack
from renderers.layers.base import expect
from renderers.paint import scaled
from renderers.pen import Pen
from renderers.resources import default_stack
from renderers.runs import UncoveredTextError, itemize, line_runs
from renderers.text_layout import layout_text

if TYPE_CHECKING:
    from PIL import Image

    from renderers.plan import Layer

Align = Literal["left", "center", "right", "start", "end"]
VAlign = Literal["top", "middle", "bottom"]
Fit = Literal["shrink", "none"]
Transform = Literal["none", "upper", "lower", "title"]

MAX_STROKE = 20


# The stack of a text layer without `font`: `sans` (Roboto Regular) and the fallback chain.
DEFAULT_FACE = default_stack()


@dataclass(frozen=True, slots=True)
class TextLayer:
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


class TextKind:
    name: str = "text"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("text", fields.text, required=True),
        Field("size", fields.int_range(4, 400), default=32, templated=False),
        Field("min_size", fields.int_range(4, 400), default=None, templated=False),
        Field("color", fields.color, default=(0, 0, 0, 255)),
        Field("font", fields.font, default=DEFAULT_FACE),
        Field("align", fields.choice("left", "center", "right", "start", "end"), default="left"),
        Field("valign", fields.choice("top", "middle", "bottom"), default="top"),
        Field("fit", fields.choice("shrink", "none"), default="shrink"),
        Field("line_height", fields.number_range(0.8, 3.0), default=1.2, templated=False),
        Field("max_lines", fields.int_range(1, 50), default=None, templated=False),
        Field("transform", fields.choice("none", "upper", "lower", "title"), default="none"),
        Field("stroke_width", fields.int_range(0, MAX_STROKE), default=0, templated=False),
        Field("stroke_color", fields.color, default=(255, 255, 255, 255)),
    )

    def make(self, values: Mapping[str, object]) -> TextLayer:
        """The layer; FieldError if a character of the text is in no font of the stack."""
        size = cast(int, values["size"])
        min_size = cast("int | None", values["min_size"])
        stack = cast(FontStack, values["font"])
        transform = cast(Transform, values["transform"])
        text = unicodedata.normalize("NFC", transformed(cast(str, values["text"]), transform))
        try:
            itemize(text, stack)
        except UncoveredTextError as exc:
            raise FieldError(str(exc), field="text") from None
        return TextLayer(
            box=cast(Box, values["box"]),
            text=text,
            size=size,
            # A min_size above size would mean "grow"; shrinking never does that.
            min_size=_default_min_size(size) if min_size is None else min(min_size, size),
            color=cast(RGBA, values["color"]),
            font=stack,
            align=cast(Align, values["align"]),
            valign=cast(VAlign, values["valign"]),
            fit=cast(Fit, values["fit"]),
            line_height=cast(float, values["line_height"]),
            max_lines=cast("int | None", values["max_lines"]),
            stroke_width=cast(int, values["stroke_width"]),
            stroke_color=cast(RGBA, values["stroke_color"]),
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        text = expect(layer, TextLayer)
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
