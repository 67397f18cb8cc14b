"""The "rect" layer: a filled rectangle, optionally with rounded corners."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, cast

from renderers import fields
from renderers.fields import RGBA, Box, Field
from renderers.layers.base import expect
from renderers.paint import fill_rect, paint_mask, rounded_mask, scaled

if TYPE_CHECKING:
    from PIL import Image

    from renderers.plan import Layer


@dataclass(frozen=True, slots=True)
class RectLayer:
    kind: ClassVar[str] = "rect"
    box: Box
    color: RGBA
    radius: int


class RectKind:
    name: str = "rect"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("color", fields.color, required=True),
        Field("radius", fields.int_range(0, 2000), default=0, templated=False),
    )

    def make(self, values: Mapping[str, object]) -> RectLayer:
        return RectLayer(
            box=cast(Box, values["box"]),
            color=cast(RGBA, values["color"]),
            radius=cast(int, values["radius"]),
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        rect = expect(layer, RectLayer)
        whole = scaled(rect.box, scale)
        visible = whole.clip(canvas)
        if visible is None:
            return
        if rect.radius == 0:
            fill_rect(canvas, rect.color, visible)
        else:
            mask = rounded_mask(visible, whole, rect.radius * scale)
            paint_mask(canvas, rect.color, mask, (visible.left, visible.top))
