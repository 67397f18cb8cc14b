"""The "qr" layer: a QR code of a coupon or link, drawn with whole-pixel modules.

Each module is a whole number of canvas pixels (a scaled QR code with blurred edges
scans worse), as large as the box allows, centred in it with its quiet zone. The code is
computed when the layer is made, so data too long for the box is a FieldError then: at
`PUT` for literal data, a fall-through for data from a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

import segno
from PIL import Image

from renderers import fields
from renderers.fields import BOX, RGBA, Box, Field, FieldError
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.layers.text import COLOR
from renderers.paint import Rect, fill_rect, paint_mask, scaled

MAX_DATA_CHARS = 1000


@dataclass(frozen=True, slots=True)
class QrLayer(Layer):
    kind: ClassVar[str] = "qr"
    box: Box
    modules: tuple[bytes, ...]  # rows of the symbol, 1 for a dark module
    color: RGBA
    background: RGBA
    quiet_zone: int  # light modules around the symbol


def qr_data(value: object, resources: fields.Resources) -> str:
    """What the code holds: a non-blank string of at most MAX_DATA_CHARS characters."""
    data = fields.text(value, resources)
    if len(data) > MAX_DATA_CHARS:
        raise FieldError(f"must be at most {MAX_DATA_CHARS} characters")
    return data


ErrorLevel = Literal["L", "M", "Q", "H"]

DATA: Field[str] = Field("data", qr_data)
ERROR: Field[ErrorLevel] = Field(
    "error", fields.choice("L", "M", "Q", "H"), default="M", templated=False
)
BACKGROUND: Field[RGBA] = Field("background", fields.color, default=(255, 255, 255, 255))
QUIET_ZONE: Field[int] = Field("quiet_zone", fields.int_range(0, 10), default=4, templated=False)


class QrKind(LayerKind[QrLayer]):
    layer_type = QrLayer
    fields = (BOX, DATA, ERROR, COLOR, BACKGROUND, QUIET_ZONE)
    draws_inside_box = True

    def build(self, values: FieldValues) -> QrLayer:
        box, quiet = values[BOX], values[QUIET_ZONE]
        # segno raises its own DataOverflowError (a ValueError) for data no version holds.
        try:
            code = segno.make(values[DATA], error=values[ERROR], micro=False)
        except ValueError as exc:
            raise FieldError(f"cannot be a QR code: {exc}", field=DATA.name) from None
        modules = tuple(bytes(row) for row in code.matrix)
        side = len(modules) + 2 * quiet
        if side > min(box[2], box[3]):
            raise FieldError(
                f"its QR code needs a box of at least {side} x {side} pixels "
                f"(version {code.version} with a quiet zone of {quiet})",
                field=DATA.name,
            )
        return QrLayer(
            box=box,
            modules=modules,
            color=values[COLOR],
            background=values[BACKGROUND],
            quiet_zone=quiet,
        )

    def paint(self, canvas: Image.Image, qr: QrLayer, scale: int, now: datetime | None) -> None:
        box = scaled(qr.box, scale)
        count = len(qr.modules)
        module = min(box.width, box.height) // (count + 2 * qr.quiet_zone)
        side = module * (count + 2 * qr.quiet_zone)
        left = box.left + (box.width - side) // 2
        top = box.top + (box.height - side) // 2
        whole = Rect(left, top, left + side, top + side)
        visible = whole.clip(canvas)
        if visible is None:
            return
        fill_rect(canvas, qr.background, visible)
        dark = Image.frombytes("L", (count, count), b"".join(qr.modules)).point(
            [0, 255] + [255] * 254
        )
        symbol = Image.new("L", (side, side), 0)
        offset = qr.quiet_zone * module
        symbol.paste(dark.resize((count * module,) * 2, Image.Resampling.NEAREST), (offset, offset))
        window = (
            visible.left - left,
            visible.top - top,
            visible.right - left,
            visible.bottom - top,
        )
        paint_mask(canvas, qr.color, symbol.crop(window), (visible.left, visible.top))
