"""The "fill" layer: one colour over the whole canvas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, cast

from renderers import fields
from renderers.fields import RGBA, Field
from renderers.layers.base import expect
from renderers.paint import Rect, fill_rect

if TYPE_CHECKING:
    from PIL import Image

    from renderers.plan import Layer


@dataclass(frozen=True, slots=True)
class FillLayer:
    kind: ClassVar[str] = "fill"
    color: RGBA


class FillKind:
    name: str = "fill"
    needs_clock: bool = False
    fields: tuple[Field, ...] = (Field("color", fields.color, required=True),)

    def make(self, values: Mapping[str, object]) -> FillLayer:
        return FillLayer(color=cast(RGBA, values["color"]))

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        fill = expect(layer, FillLayer)
        # Composited, not painted: a semi-transparent fill tints what is below it.
        fill_rect(canvas, fill.color, Rect(0, 0, canvas.width, canvas.height))
