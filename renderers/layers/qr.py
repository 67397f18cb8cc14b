"""The "qr" layer: a QR code of a coupon or link, drawn with whole-pixel modules.

Each module is a whole number of canvas pixels (a scaled QR code with blurred edges
scans worse), as large as the box allows, centred in it with its quiet zone. The code is
computed when the layer is made, so data too long for the box is a FieldError then: at
`PUT` for literal data, a fall-through for data from a template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, cast

import segno
from PIL import Image

from renderers import fields
from renderers.fields import RGBA, Box, Field, FieldError
from renderers.layers.base import expect
from renderers.paint import Rect, fill_rect, paint_mask, scaled

if TYPE_CHECKING:
    from renderers.plan import Layer

MAX_DATA_CHARS = 1000


@dataclass(frozen=True, slots=True)
class QrLayer:
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


class QrKind:
    name: str = "qr"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("data", qr_data, required=True),
        Field("error", fields.choice("L", "M", "Q", "H"), default="M", templated=False),
        Field("color", fields.color, default=(0, 0, 0, 255)),
        Field("background", fields.color, default=(255, 255, 255, 255)),
        Field("quiet_zone", fields.int_range(0, 10), default=4, templated=False),
    )

    def make(self, values: Mapping[str, object]) -> QrLayer:
        box = cast(Box, values["box"])
        quiet = cast(int, values["quiet_zone"])
        # segno raises its own DataOverflowError (a ValueError) for data no version holds.
        try:
            code = segno.make(
                cast(str, values["data"]), error=cast(str, values["error"]), micro=False
            )
        except ValueError as exc:
            raise FieldError(f"cannot be a QR code: {exc}", field="data") from None
        modules = tuple(bytes(row) for row in code.matrix)
        side = len(modules) + 2 * quiet
        if side > min(box[2], box[3]):
            raise FieldError(
                f"its QR code needs a box of at least {side} x {side} pixels "
                f"(version {code.version} with a quiet zone of {quiet})",
                field="data",
            )
        return QrLayer(
            box=box,
            modules=modules,
            color=cast(RGBA, values["color"]),
            background=cast(RGBA, values["background"]),
            quiet_zone=quiet,
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        qr = expect(layer, QrLayer)
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
