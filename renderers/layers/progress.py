"""The "progress" layer: a bar filled to `value` out of `max`, e.g. loyalty points to a tier.

`value` and `max` usually come from data (`"{{ profile.points }}"`); a value beyond
`max` shows a full bar and one below zero an empty one. With `radius`, the track's
rounded ends also shape the bar inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, cast

from PIL import Image

from renderers import fields
from renderers.fields import RGBA, Box, Field, FieldError
from renderers.layers.base import expect
from renderers.paint import paint_mask, rounded_mask, scaled

if TYPE_CHECKING:
    from renderers.plan import Layer


@dataclass(frozen=True, slots=True)
class ProgressLayer:
    kind: ClassVar[str] = "progress"
    box: Box
    fraction: float  # 0 to 1: how much of the bar is filled
    color: RGBA
    track: RGBA
    radius: int


class ProgressKind:
    name: str = "progress"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (
        Field("box", fields.box, required=True, templated=False),
        Field("value", fields.number, required=True),
        Field("max", fields.number, default=100.0),
        Field("color", fields.color, default=(47, 158, 68, 255)),
        Field("track", fields.color, default=(233, 236, 239, 255)),
        Field("radius", fields.int_range(0, 2000), default=0, templated=False),
    )

    def make(self, values: Mapping[str, object]) -> ProgressLayer:
        value, maximum = cast(float, values["value"]), cast(float, values["max"])
        if maximum <= 0:
            raise FieldError("must be more than 0", field="max")
        return ProgressLayer(
            box=cast(Box, values["box"]),
            fraction=min(max(value / maximum, 0.0), 1.0),
            color=cast(RGBA, values["color"]),
            track=cast(RGBA, values["track"]),
            radius=cast(int, values["radius"]),
        )

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        bar = expect(layer, ProgressLayer)
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
