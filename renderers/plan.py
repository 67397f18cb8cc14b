"""The render plan: everything one image is drawn from, as plain immutable values.

The server builds a plan (templates resolved, fields parsed, assets loaded, `now` fixed)
and hands it to `render`; equal plans always give the same image, so a plan can key a
cache. A plan whose layers need the clock (a countdown) carries `now`, truncated to the
second, so every open in the same second shares one render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from renderers.fields import MAX_SIDE, RGBA, Box
from renderers.layers.base import Layer

__all__ = [
    "DPRS",
    "FORMATS",
    "MAX_OUTPUT_PIXELS",
    "MAX_SIDE",
    "MIN_MAX_BYTES",
    "RGBA",
    "Box",
    "ImageFormat",
    "Layer",
    "RenderPlan",
]

ImageFormat = Literal["png", "jpg", "gif"]
FORMATS: tuple[ImageFormat, ...] = ("png", "jpg", "gif")
# Canvas pixels per block pixel: a block is drawn at each for screens of that density.
DPRS = (1, 2, 3)

# Output pixels (width * height * dpr²): a 600 x 2000 block at dpr 3 is 10.8 million.
MAX_OUTPUT_PIXELS = 24_000_000
# No image fits in less: a budget below it is a typing mistake, not a budget.
MIN_MAX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """An image of `width` x `height` block pixels, drawn at `dpr` canvas pixels per block pixel."""

    width: int
    height: int
    dpr: int  # 1, 2 or 3: the output is drawn at width*dpr x height*dpr, not upscaled
    format: ImageFormat
    layers: tuple[Layer, ...]  # bottom first
    # The time of the open: aware, in the recipient's zone, whole seconds. Required when
    # a layer needs the clock (`LayerKind.needs_clock`), else best left None so that
    # plans of different seconds stay equal.
    now: datetime | None = None
    # The encoded image must not be larger: the encoder trades colours, quality and
    # (for animations) frames to fit, and raises ByteBudgetError if it cannot.
    max_bytes: int | None = None
    # The first `static_prefix` layers are the same for every recipient: their drawing
    # is cached (keyed by size, dpr and those layers) and only the rest is drawn.
    static_prefix: int = 0
    # The zone of `now` takes part in equality: a countdown to a local wall-clock time
    # ends at a different instant in each zone, though `now` is the same instant.
    _zone: str | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"width and height must be between 1 and {MAX_SIDE}")
        if self.dpr not in DPRS:
            raise ValueError("dpr must be 1, 2 or 3")
        if self.width * self.height * self.dpr**2 > MAX_OUTPUT_PIXELS:
            raise ValueError(f"the image would have more than {MAX_OUTPUT_PIXELS} pixels")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if self.now is not None:
            if self.now.tzinfo is None or self.now.utcoffset() is None:
                raise ValueError("now must be timezone-aware")
            zone = getattr(self.now.tzinfo, "key", None) or str(self.now.tzinfo)
            object.__setattr__(self, "_zone", zone)
        if self.max_bytes is not None and self.max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}")
        if not 0 <= self.static_prefix <= len(self.layers):
            raise ValueError("static_prefix must be between 0 and the number of layers")
