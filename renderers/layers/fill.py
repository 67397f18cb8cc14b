"""The "fill" layer: one colour over the whole canvas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from renderers import fields
from renderers.fields import RGBA, Field
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.paint import Rect, fill_rect

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True, slots=True)
class FillLayer(Layer):
    kind: ClassVar[str] = "fill"
    color: RGBA


COLOR: Field[RGBA] = Field("color", fields.color)


class FillKind(LayerKind[FillLayer]):
    layer_type = FillLayer
    fields = (COLOR,)
    # It covers the whole canvas: `draws_inside_box` stays False.

    def build(self, values: FieldValues) -> FillLayer:
        return FillLayer(color=values[COLOR])

    def paint(
        self, canvas: Image.Image, layer: FillLayer, scale: int, now: datetime | None
    ) -> None:
        # Composited, not painted: a semi-transparent fill tints what is below it.
        fill_rect(canvas, layer.color, Rect(0, 0, canvas.width, canvas.height))
