"""Encoding a finished RGBA canvas as PNG, JPEG or GIF bytes for an email client."""

from __future__ import annotations

import io

from PIL import Image

from renderers.plan import ImageFormat

CONTENT_TYPES: dict[ImageFormat, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
}

_WHITE = (255, 255, 255)
# GIF transparency is on or off: pixels less than half covered become transparent.
_GIF_ALPHA_CUTOFF = 128
# The palette's last entry is kept for transparency; the picture gets the other 255.
_GIF_TRANSPARENT_INDEX = 255


def encode(image: Image.Image, fmt: ImageFormat) -> bytes:
    """`image` (RGBA) as `fmt` bytes: PNG keeps alpha, JPEG goes onto white, GIF keeps a cut-out."""
    transparent = _has_transparency(image)
    out = io.BytesIO()
    if fmt == "png":
        picture = image if transparent else image.convert("RGB")
        picture.save(out, format="PNG", compress_level=6)
    elif fmt == "jpg":
        _on_white(image).save(out, format="JPEG", quality=85, optimize=False, subsampling="4:2:0")
    else:
        picture = _gif(image, transparent)
        if transparent:
            picture.save(out, format="GIF", transparency=_GIF_TRANSPARENT_INDEX)
        else:
            picture.save(out, format="GIF")
    return out.getvalue()


def _has_transparency(image: Image.Image) -> bool:
    low, _high = image.getchannel("A").getextrema()
    return bool(low != 255)


def _on_white(image: Image.Image) -> Image.Image:
    """`image` flattened onto white, as RGB (email clients show no alpha in JPEG)."""
    flat = Image.new("RGB", image.size, _WHITE)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _gif(image: Image.Image, transparent: bool) -> Image.Image:
    flat = _on_white(image)
    # FASTOCTREE is by far the quickest of Pillow's adaptive quantizers (a few ms, where
    # median cut takes over 100) and as accurate; alone it bands gradients and photos,
    # so the picture is mapped onto its palette again with error diffusion, which hides
    # that for a few ms more. Flat colours in the palette come out exact either way.
    palette = flat.quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    indexed = flat.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    if transparent:
        entries = indexed.getpalette() or []
        indexed.putpalette(entries + [0] * (768 - len(entries)))
        cut_out = image.getchannel("A").point(lambda a: 255 if a < _GIF_ALPHA_CUTOFF else 0)
        indexed.paste(_GIF_TRANSPARENT_INDEX, mask=cut_out)
    return indexed


def _transparent_pixel() -> bytes:
    out = io.BytesIO()
    pixel = Image.new("P", (1, 1), 0)
    pixel.putpalette([0, 0, 0])
    pixel.save(out, format="GIF", transparency=0)
    return out.getvalue()


TRANSPARENT_GIF: bytes = _transparent_pixel()
"""A 1x1 fully transparent GIF: what an open shows when there is nothing to show."""
