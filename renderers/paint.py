"""Pixel operations shared by layer kinds.

Boxes scaled to canvas pixels and clipped to the canvas (so no layer allocates more than
the canvas, whatever its box says), anti-aliased rounded-corner masks, and compositing a
colour through a coverage mask.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image, ImageDraw

from renderers.fields import RGBA, Box

# Rounded corners are drawn this many times larger and scaled down, for smooth edges.
_CORNER_SUPERSAMPLE = 4
# ... unless the corner is large, where a big supersampled drawing buys nothing visible.
_CORNER_SUPERSAMPLE_MAX_PX = 1024


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in canvas pixels, right and bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def clip(self, canvas: Image.Image) -> Rect | None:
        """The part of this rectangle on the canvas, or None if none of it is."""
        left, top = max(self.left, 0), max(self.top, 0)
        right, bottom = min(self.right, canvas.width), min(self.bottom, canvas.height)
        if left >= right or top >= bottom:
            return None
        return Rect(left, top, right, bottom)


def scaled(box: Box, scale: int) -> Rect:
    """A layer box (block pixels) in canvas pixels."""
    x, y, w, h = (v * scale for v in box)
    return Rect(x, y, x + w, y + h)


def fill_rect(canvas: Image.Image, color: RGBA, rect: Rect) -> None:
    """Composite `color` over the (on-canvas) `rect`."""
    if color[3] == 255:
        canvas.paste(color, (rect.left, rect.top, rect.right, rect.bottom))
    elif color[3] > 0:
        canvas.alpha_composite(
            Image.new("RGBA", (rect.width, rect.height), color), (rect.left, rect.top)
        )


def paint_mask(
    canvas: Image.Image, color: RGBA, mask: Image.Image, origin: tuple[int, int]
) -> None:
    """Composite `color` over the canvas at `origin`, with coverage given by the "L" `mask`."""
    red, green, blue, alpha = color
    if alpha == 0:
        return
    if alpha < 255:
        mask = mask.point([v * alpha // 255 for v in range(256)])
    # Straight (not premultiplied) colour plus coverage as alpha: pasting the colour onto
    # a transparent layer would darken anti-aliased edges.
    overlay = Image.new("RGBA", mask.size, (red, green, blue, 255))
    overlay.putalpha(mask)
    canvas.alpha_composite(overlay, origin)


def rounded_mask(window: Rect, rect: Rect, radius: int) -> Image.Image:
    """Coverage of `rect` with corners rounded to `radius`, seen through `window` (inside `rect`).

    Both are canvas rectangles; the mask is the size of `window`.
    """
    mask = Image.new("L", (window.width, window.height), 255)
    radius = min(radius, rect.width // 2, rect.height // 2)
    if radius <= 0:
        return mask
    top_left, top_right, bottom_left, bottom_right = _corners(radius)
    left, top = rect.left - window.left, rect.top - window.top
    right, bottom = rect.right - window.left - radius, rect.bottom - window.top - radius
    # Pasting clips to the mask, so corners outside the window cost nothing.
    mask.paste(top_left, (left, top))
    mask.paste(top_right, (right, top))
    mask.paste(bottom_left, (left, bottom))
    mask.paste(bottom_right, (right, bottom))
    return mask


@functools.lru_cache(maxsize=32)
def _corners(radius: int) -> tuple[Image.Image, Image.Image, Image.Image, Image.Image]:
    """Quarter-disc coverage masks, radius x radius.

    In order: top-left, top-right, bottom-left, bottom-right.
    """
    factor = max(1, min(_CORNER_SUPERSAMPLE, _CORNER_SUPERSAMPLE_MAX_PX // radius))
    big = radius * factor
    drawing = Image.new("L", (big, big), 0)
    ImageDraw.Draw(drawing).ellipse((0, 0, 2 * big - 1, 2 * big - 1), fill=255)
    top_left = drawing.resize((radius, radius), Image.Resampling.BOX) if factor > 1 else drawing
    return (
        top_left,
        top_left.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        top_left.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        top_left.transpose(Image.Transpose.ROTATE_180),
    )
