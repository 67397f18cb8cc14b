"""The render plan: everything one image is drawn from, as plain immutable values.

The server builds a plan (templates resolved, fields parsed, assets loaded) and hands it
to `render`; equal plans always give the same image, so a plan can key a cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from renderers.fields import MAX_SIDE, RGBA, Box
from renderers.layers.fill import FillLayer
from renderers.layers.image import ImageLayer
from renderers.layers.rect import RectLayer
from renderers.layers.text import TextLayer

__all__ = [
    "MAX_OUTPUT_PIXELS",
    "MAX_SIDE",
    "RGBA",
    "Box",
    "ImageFormat",
    "Layer",
    "RenderPlan",
]

ImageFormat = Literal["png", "jpg", "gif"]
Layer: TypeAlias = FillLayer | RectLayer | TextLayer | ImageLayer

# Output pixels (width * height * dpr²): a 600 x 2000 block at dpr 3 is 10.8 million.
MAX_OUTPUT_PIXELS = 24_000_000
_DPRS = (1, 2, 3)
_FORMATS = ("png", "jpg", "gif")


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """An image of `width` x `height` block pixels, drawn at `dpr` canvas pixels per block pixel."""

    width: int
    height: int
    dpr: int  # 1, 2 or 3: the output is drawn at width*dpr x height*dpr, not upscaled
    format: ImageFormat
    layers: tuple[Layer, ...]  # bottom first

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"width and height must be between 1 and {MAX_SIDE}")
        if self.dpr not in _DPRS:
            raise ValueError("dpr must be 1, 2 or 3")
        if self.width * self.height * self.dpr**2 > MAX_OUTPUT_PIXELS:
            raise ValueError(f"the image would have more than {MAX_OUTPUT_PIXELS} pixels")
        if self.format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}")
