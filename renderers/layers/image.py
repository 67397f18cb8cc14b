"""The "image" layer: an asset scaled into a box (contain, cover or stretch), maybe rounded.

`src` is an asset file, or an https URL that the server fetched before rendering: both
arrive here as a decoded Asset, so fitting and rounding work the same for either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from PIL import Image, ImageChops

from renderers import fields
from renderers.fields import BOX, RADIUS, Box, Field
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.paint import Rect, rounded_mask, scaled
from renderers.picture_cache import PictureCache, image_bytes
from renderers.resources import Asset

ImageFit = Literal["contain", "cover", "stretch"]
SourceBox = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


@dataclass(frozen=True, slots=True)
class ImageLayer(Layer):
    kind: ClassVar[str] = "image"
    box: Box
    src: Asset
    fit: ImageFit
    radius: int


SRC: Field[Asset] = Field("src", fields.asset, at_open=fields.fetched_at_open)
FIT: Field[ImageFit] = Field("fit", fields.choice("contain", "cover", "stretch"), default="contain")


class ImageKind(LayerKind[ImageLayer]):
    layer_type = ImageLayer
    fields = (BOX, SRC, FIT, RADIUS)
    draws_inside_box = True

    def build(self, values: FieldValues) -> ImageLayer:
        return ImageLayer(box=values[BOX], src=values[SRC], fit=values[FIT], radius=values[RADIUS])

    def paint(
        self, canvas: Image.Image, image: ImageLayer, scale: int, now: datetime | None
    ) -> None:
        source_w, source_h = image.src.image.size
        target, source = _placement(scaled(image.box, scale), source_w, source_h, image.fit)
        visible = target.clip(canvas)
        if visible is None:
            return
        # Resample only the part of the source that lands on the canvas.
        x_ratio = (source[2] - source[0]) / target.width
        y_ratio = (source[3] - source[1]) / target.height
        window = (
            source[0] + (visible.left - target.left) * x_ratio,
            source[1] + (visible.top - target.top) * y_ratio,
            source[0] + (visible.right - target.left) * x_ratio,
            source[1] + (visible.bottom - target.top) * y_ratio,
        )
        corners = _Corners(target, visible, image.radius * scale) if image.radius else None
        picture = _resample(image.src, window, (visible.width, visible.height), corners)
        canvas.alpha_composite(picture, (visible.left, visible.top))


@dataclass(frozen=True, slots=True)
class _Corners:
    """Rounded corners of `target`, as seen through `visible`."""

    target: Rect
    visible: Rect
    radius: int


def _placement(box: Rect, source_w: int, source_h: int, fit: ImageFit) -> tuple[Rect, SourceBox]:
    """Where on the canvas the image goes, and which part of the source fills that place."""
    whole: SourceBox = (0.0, 0.0, float(source_w), float(source_h))
    if fit == "stretch":
        return box, whole
    if fit == "contain":
        ratio = min(box.width / source_w, box.height / source_h)
        width = max(1, round(source_w * ratio))
        height = max(1, round(source_h * ratio))
        left = box.left + (box.width - width) // 2
        top = box.top + (box.height - height) // 2
        return Rect(left, top, left + width, top + height), whole
    ratio = max(box.width / source_w, box.height / source_h)  # cover: crop the centre
    crop_w, crop_h = box.width / ratio, box.height / ratio
    crop_left, crop_top = (source_w - crop_w) / 2, (source_h - crop_h) / 2
    return box, (crop_left, crop_top, crop_left + crop_w, crop_top + crop_h)


def _resample(
    asset: Asset, window: SourceBox, size: tuple[int, int], corners: _Corners | None
) -> Image.Image:
    key = (asset, window, size, corners)
    picture = _PICTURES.get(key)
    if picture is None:
        picture = asset.image.resize(size, Image.Resampling.LANCZOS, box=window, reducing_gap=3.0)
        if corners is not None:
            mask = rounded_mask(corners.visible, corners.target, corners.radius)
            picture.putalpha(ImageChops.multiply(picture.getchannel("A"), mask))
        _PICTURES.put(key, picture)
    return picture


_PICTURES = PictureCache[Image.Image](max_bytes=64 * 1024 * 1024, size_of=image_bytes)
