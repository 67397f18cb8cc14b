"""The "progress" layer: a bar filled to `value` out of `max`, e.g. loyalty points to a tier.

`value` and `max` usually come from data (`"{{ profile.points }}"`); a value beyond
`max` shows a full bar and one below zero an empty one. With `radius`, the track's
rounded ends also shape the bar inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from PIL import Image

from renderers import fields
from renderers.fields import BOX, RADIUS, RGBA, Box, Field, FieldError
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.paint import paint_mask, rounded_mask, scaled


@dataclass(frozen=True, slots=True)
class ProgressLayer(Layer):
    kind: ClassVar[str] = "progress"
    box: Box
    fraction: float  # 0 to 1: how much of the bar is filled
    color: RGBA
    track: RGBA
    radius: int


VALUE: Field[float] = Field("value", fields.number)
MAX: Field[float] = Field("max", fields.number, default=100.0)
COLOR: Field[RGBA] = Field("color", fields.color, default=(47, 158, 68, 255))
TRACK: Field[RGBA] = Field("track", fields.color, default=(233, 236, 239, 255))


class ProgressKind(LayerKind[ProgressLayer]):
    layer_type = ProgressLayer
    fields = (BOX, VALUE, MAX, COLOR, TRACK, RADIUS)
    draws_inside_box = True

    def build(self, values: FieldValues) -> ProgressLayer:
        value, maximum = values[VALUE], values[MAX]
        if maximum <= 0:
            raise FieldError("must be more than 0", field=MAX.name)
        return ProgressLayer(
            box=values[BOX],
            fraction=min(max(value / maximum, 0.0), 1.0),
            color=values[COLOR],
            track=values[TRACK],
            radius=values[RADIUS],
        )

    def paint(
        self, canvas: Image.Image, bar: ProgressLayer, scale: int, now: datetime | None
    ) -> None:
        whole = scaled(bar.box, scale)
        visible = whole.clip(canvas)
        if visible is None:
            return
        shape = rounded_mask(visible, whole, bar.radius * scale)
        paint_mask(canvas, bar.track, shape, (visible.left, visible.top))
        filled_to = round(whole.left + whole.width * bar.fraction) - visible.left
        if filled_to <= 0:
            return
        filled = Image.new("L", shape.size, 0)
        filled.paste(shape.crop((0, 0, filled_to, shape.height)), (0, 0))
        paint_mask(canvas, bar.color, filled, (visible.left, visible.top))
