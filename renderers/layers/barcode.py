"""The "barcode" layer: a Code 128 or EAN-13 coupon code, bars of whole pixels.

Each module (the narrowest bar) is a whole number of canvas pixels, as wide as the box
allows, and the bars fill the box's height; the symbol is centred with its quiet zones.
Data that does not encode (a wrong EAN-13 check digit) or does not fit the box is a
FieldError when the layer is made.

With `human_readable: below` the data is printed under the bars, as on packaging: an
EAN-13's first digit left of the bars, then two groups of six, with the guard bars
reaching down between them; Code 128's text centred under the bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, NamedTuple

from PIL import Image

from renderers import barcodes, fields
from renderers.fields import BOX, RGBA, Box, Field, FieldError
from renderers.fonts import FontStack
from renderers.glyphs import load_font
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.layers.text import COLOR, FONT
from renderers.paint import Rect, fill_rect, paint_mask, scaled
from renderers.pen import Pen
from renderers.runs import Ruler, line_runs

# The printed digits' size, in modules (EAN-13's are about nine modules tall), and at
# most this share of the box's height.
TEXT_MODULES = 9
TEXT_SHARE = 0.3


class Caption(NamedTuple):
    """Text printed under the bars, centred between two module positions."""

    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class BarcodeLayer(Layer):
    kind: ClassVar[str] = "barcode"
    box: Box
    pattern: str  # "1" dark and "0" light modules, quiet zones included
    color: RGBA
    background: RGBA
    font: FontStack
    captions: tuple[Caption, ...] = ()  # none: the bars fill the box
    guards: tuple[tuple[int, int], ...] = ()  # module ranges that reach into the text


DATA: Field[str] = Field("data", fields.text)
SYMBOLOGY: Field[Literal["code128", "ean13"]] = Field(
    "symbology", fields.choice("code128", "ean13"), default="code128", templated=False
)
BACKGROUND: Field[RGBA] = Field("background", fields.color, default=(255, 255, 255, 255))
HUMAN_READABLE: Field[Literal["none", "below"]] = Field(
    "human_readable", fields.choice("none", "below"), default="none", templated=False
)


class BarcodeKind(LayerKind[BarcodeLayer]):
    layer_type = BarcodeLayer
    fields = (BOX, DATA, SYMBOLOGY, COLOR, BACKGROUND, HUMAN_READABLE, FONT)
    draws_inside_box = True

    def build(self, values: FieldValues) -> BarcodeLayer:
        box, data = values[BOX], values[DATA]
        ean = values[SYMBOLOGY] == "ean13"
        try:
            if ean:
                before, after = barcodes.EAN13_QUIET
                bars = barcodes.ean13(data)
            else:
                before = after = barcodes.CODE128_QUIET
                bars = barcodes.code128(data)
        except barcodes.BarcodeError as exc:
            raise FieldError(str(exc), field=DATA.name) from None
        pattern = "0" * before + bars + "0" * after
        captions: tuple[Caption, ...] = ()
        guards: tuple[tuple[int, int], ...] = ()
        if values[HUMAN_READABLE] == "below":
            if ean:
                full = data[:12] + str(barcodes.ean13_check_digit(data[:12]))
                captions, guards = _ean13_text(full, before)
            else:
                captions = (Caption(data, before, before + len(bars)),)
        if len(pattern) > box[2]:
            raise FieldError(
                f"its barcode is {len(pattern)} modules wide with its quiet zones: "
                f"the box must be at least {len(pattern)} pixels wide",
                field=DATA.name,
            )
        return BarcodeLayer(
            box=box,
            pattern=pattern,
            color=values[COLOR],
            background=values[BACKGROUND],
            font=values[FONT],
            captions=captions,
            guards=guards,
        )

    def paint(
        self, canvas: Image.Image, barcode: BarcodeLayer, scale: int, now: datetime | None
    ) -> None:
        box = scaled(barcode.box, scale)
        module = box.width // len(barcode.pattern)
        width = module * len(barcode.pattern)
        left = box.left + (box.width - width) // 2
        whole = Rect(left, box.top, left + width, box.bottom)
        visible = whole.clip(canvas)
        if visible is None:
            return
        fill_rect(canvas, barcode.background, visible)
        bars = Image.new("L", (width, box.height), 0)
        text_height = 0
        if barcode.captions:
            ruler, px, ascent, descent = _text_size(barcode, module, box.height)
            text_height = ascent + descent
        bars_height = max(1, box.height - text_height - (module if text_height else 0))
        bars.paste(_modules(barcode.pattern, width, bars_height), (0, 0))
        if barcode.guards:
            guards_only = list("0" * len(barcode.pattern))
            for start, end in barcode.guards:
                guards_only[start:end] = barcode.pattern[start:end]
            reach = (box.height - bars_height) // 2
            bars.paste(_modules("".join(guards_only), width, reach), (0, bars_height))
        window = (
            visible.left - left,
            visible.top - box.top,
            visible.right - left,
            visible.bottom - box.top,
        )
        paint_mask(canvas, barcode.color, bars.crop(window), (visible.left, visible.top))
        if barcode.captions:
            pen = Pen((width, box.height))
            for caption in barcode.captions:
                middle = (caption.start + caption.end) / 2 * module
                runs = line_runs(caption.text, barcode.font, rtl=False)
                x = middle - ruler.width(caption.text, px) / 2
                pen.line(runs, ruler, round(x), box.height - descent, px)
            text = Image.new("RGBA", (width, box.height), (0, 0, 0, 0))
            pen.paint(text, (0, 0), barcode.color, barcode.color)
            canvas.alpha_composite(text.crop(window), (visible.left, visible.top))


def _modules(pattern: str, width: int, height: int) -> Image.Image:
    """A mask of `pattern`'s dark modules stretched to `width` x `height`."""
    row = Image.frombytes("L", (len(pattern), 1), pattern.encode("ascii"))
    return row.point(lambda v: 255 if v == ord("1") else 0).resize(
        (width, max(1, height)), Image.Resampling.NEAREST
    )


def _text_size(barcode: BarcodeLayer, module: int, height: int) -> tuple[Ruler, int, int, int]:
    """The captions' ruler, pixel size, ascent and descent: about nine modules tall,
    smaller if the box is short or a caption would be wider than its place."""
    px = max(1, min(module * TEXT_MODULES, int(height * TEXT_SHARE)))
    ruler = Ruler(barcode.font, px)
    while px > 1 and any(
        ruler.width(c.text, px) > (c.end - c.start) * module for c in barcode.captions
    ):
        px -= 1
    ascent, descent = load_font(barcode.font.primary, px).getmetrics()
    return ruler, px, ascent, descent


def _ean13_text(
    digits: str, before: int
) -> tuple[tuple[Caption, ...], tuple[tuple[int, int], ...]]:
    """An EAN-13's printed digits and guard bars, in modules from the quiet zone's start:
    the first digit in the quiet zone, six under each half, the guards between."""
    start, middle, end = before, before + 45, before + 92
    captions = (
        Caption(digits[0], before - 8, before - 1),
        Caption(digits[1:7], start + 3, middle),
        Caption(digits[7:13], middle + 5, end),
    )
    return captions, ((start, start + 3), (middle, middle + 5), (end, end + 3))
