"""The "rect" layer: a filled rectangle, optionally with rounded corners."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from renderers import fields
from renderers.fields import BOX, RADIUS, RGBA, Box, Field
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.paint import fill_rect, paint_mask, rounded_mask, scaled

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True, slots=True)
class RectLayer(Layer):
    kind: ClassVar[str] = "rect"
    box: Box
    color: RGBA
    radius: int


COLOR: Field[RGBA] = Field("color", fields.color)


class RectKind(LayerKind[RectLayer]):
    layer_type = RectLayer
    fields = (BOX, COLOR, RADIUS)
    draws_inside_box = True

    def build(self, values: FieldValues) -> RectLayer:
        return RectLayer(box=values[BOX], color=values[COLOR], radius=values[RADIUS])

    def paint(
        self, canvas: Image.Image, layer: RectLayer, scale: int, now: datetime | None
    ) -> None:
        whole = scaled(layer.box, scale)
        visible = whole.clip(canvas)
        if visible is None:
            return
        if layer.radius == 0:
            fill_rect(canvas, layer.color, visible)
        else:
            mask = rounded_mask(visible, whole, layer.radius * scale)
            paint_mask(canvas, layer.color, mask, (visible.left, visible.top))
