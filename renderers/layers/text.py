"""The "text" layer: text wrapped, fitted and aligned inside a box, never drawn outside it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from PIL import Image, ImageDraw

from renderers import fields
from renderers.fields import RGBA, Box, Field
from renderers.layers.base import expect
from renderers.layers.paint import paint_mask, scaled
from renderers.resources import DEFAULT_FONT, FontFace, builtin_fonts, load_font
from renderers.text_layout import layout_text

if TYPE_CHECKING:
    from renderers.plan import Layer

Align = Literal["left", "center", "right"]
VAlign = Literal["top", "middle", "bottom"]
Fit = Literal["shrink", "none"]

DEFAULT_FACE = FontFace(DEFAULT_FONT, str(builtin_fonts()[DEFAULT_FONT]))


@dataclass(frozen=True, slots=True)
class TextLayer:
    kind: ClassVar[str] = "text"
    box: Box
    text: str
    size: int  # the largest size, block pixels
    min_size: int  # the smallest size shrinking may choose
    color: RGBA
    font: FontFace
    align: Align
    valign: VAlign
    fit: Fit
    line_height: float  # baseline to baseline, in multiples of the size
    max_lines: int | None  # None: as many as fit


def _default_min_size(size: int) -> int:
    """The smallest size shrinking goes to when the layer does not say: half, but legible."""
    return min(size, max(8, size // 2))


class TextKind:
    name: str = "text"
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("text", fields.text, required=True),
        Field("size", fields.int_range(4, 400), default=32, templated=False),
        Field("min_size", fields.int_range(4, 400), default=None, templated=False),
        Field("color", fields.color, default=(0, 0, 0, 255)),
        Field("font", fields.font, default=DEFAULT_FACE),
        Field("align", fields.choice("left", "center", "right"), default="left"),
        Field("valign", fields.choice("top", "middle", "bottom"), default="top"),
        Field("fit", fields.choice("shrink", "none"), default="shrink"),
        Field("line_height", fields.number_range(0.8, 3.0), default=1.2, templated=False),
        Field("max_lines", fields.int_range(1, 50), default=None, templated=False),
    )

    def make(self, values: Mapping[str, object]) -> TextLayer:
        size = cast(int, values["size"])
        min_size = cast("int | None", values["min_size"])
        return TextLayer(
            box=cast(Box, values["box"]),
            text=cast(str, values["text"]),
            size=size,
            # A min_size above size would mean "grow"; shrinking never does that.
            min_size=_default_min_size(size) if min_size is None else min(min_size, size),
            color=cast(RGBA, values["color"]),
            font=cast(FontFace, values["font"]),
            align=cast(Align, values["align"]),
            valign=cast(VAlign, values["valign"]),
            fit=cast(Fit, values["fit"]),
            line_height=cast(float, values["line_height"]),
            max_lines=cast("int | None", values["max_lines"]),
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int) -> None:
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
        font = load_font(text.font, layout.size * scale)
        # Glyph coverage is drawn into a mask the size of the visible box, which clips
        # the text to its box (and to the canvas) for free.
        mask = Image.new("L", (visible.width, visible.height), 0)
        pen = ImageDraw.Draw(mask)
        top = box.top + _offset(text.valign, box.height - layout.height)
        for index, (line, width) in enumerate(zip(layout.lines, layout.widths, strict=True)):
            left = box.left + _offset(text.align, box.width - width)
            # Whole-pixel baselines keep horizontal strokes crisp.
            y = round(top + index * layout.pitch)
            pen.text(
                (round(left) - visible.left, y - visible.top),
                line,
                font=font,
                fill=255,
                anchor="la",
            )
        paint_mask(canvas, text.color, mask, (visible.left, visible.top))


def _offset(where: str, room: float) -> float:
    """How far to move a line (or the block of lines) into `room` spare pixels."""
    if where in ("center", "middle"):
        return room / 2
    if where in ("right", "bottom"):
        return room
    return 0.0
