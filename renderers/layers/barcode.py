"""The "barcode" layer: a Code 128 or EAN-13 coupon code, bars of whole pixels.

Each module (the narrowest bar) is a whole number of canvas pixels, as wide as the box
allows, and the bars fill the box's height; the symbol is centred with its quiet zones.
Data that does not encode (a wrong EAN-13 check digit) or does not fit the box is a
FieldError when the layer is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, cast

from PIL import Image

from renderers import barcodes, fields
from renderers.fields import RGBA, Box, Field, FieldError
from renderers.layers.base import expect
from renderers.paint import Rect, fill_rect, paint_mask, scaled

if TYPE_CHECKING:
    from renderers.plan import Layer


@dataclass(frozen=True, slots=True)
class BarcodeLayer:
    kind: ClassVar[str] = "barcode"
    box: Box
    pattern: str  # "1" dark and "0" light modules, quiet zones included
    color: RGBA
    background: RGBA


class BarcodeKind:
    name: str = "barcode"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("data", fields.text, required=True),
        Field("symbology", fields.choice("code128", "ean13"), default="code128", templated=False),
        Field("color", fields.color, default=(0, 0, 0, 255)),
        Field("background", fields.color, default=(255, 255, 255, 255)),
    )

    def make(self, values: Mapping[str, object]) -> BarcodeLayer:
        box = cast(Box, values["box"])
        data = cast(str, values["data"])
        try:
            if values["symbology"] == "ean13":
                before, after = barcodes.EAN13_QUIET
                bars = barcodes.ean13(data)
            else:
                before = after = barcodes.CODE128_QUIET
                bars = barcodes.code128(data)
        except barcodes.BarcodeError as exc:
            raise FieldError(str(exc), field="data") from None
        pattern = "0" * before + bars + "0" * after
        if len(pattern) > box[2]:
            raise FieldError(
                f"its barcode is {len(pattern)} modules wide with its quiet zones: "
                f"the box must be at least {len(pattern)} pixels wide",
                field="data",
            )
        return BarcodeLayer(
            box=box,
            pattern=pattern,
            color=cast(RGBA, values["color"]),
            background=cast(RGBA, values["background"]),
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        barcode = expect(layer, BarcodeLayer)
        box = scaled(barcode.box, scale)
        module = box.width // len(barcode.pattern)
        width = module * len(barcode.pattern)
        left = box.left + (box.width - width) // 2
        whole = Rect(left, box.top, left + width, box.bottom)
        visible = whole.clip(canvas)
        if visible is None:
            return
        fill_rect(canvas, barcode.background, visible)
        row = Image.frombytes("L", (len(barcode.pattern), 1), barcode.pattern.encode("ascii"))
        bars = row.point(lambda v: 255 if v == ord("1") else 0).resize(
            (width, box.height), Image.Resampling.NEAREST
        )
        window = (
            visible.left - left,
            visible.top - box.top,
            visible.right - left,
            visible.bottom - box.top,
        )
        paint_mask(canvas, barcode.color, bars.crop(window), (visible.left, visible.top))
