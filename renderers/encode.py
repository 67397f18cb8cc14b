"""Encoding a finished RGBA canvas as PNG, JPEG or GIF bytes for an email client.

With a byte budget (`max_bytes`), the encoder tries cheaper settings in turn until the
image fits: a palette PNG (lossless when the image has at most 256 colours, else fewer
and fewer colours), lower JPEG qualities, fewer GIF colours. Each step costs quality
only when the step before did not fit, and an image that fits nowhere is an error, so
that a block whose default cannot fit is rejected when it is stored.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from functools import partial

from PIL import Image

from renderers.plan import ImageFormat

CONTENT_TYPES: dict[ImageFormat, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
}

_WHITE = (255, 255, 255)
# GIF transparency is on or off: pixels less than half covered become transparent.
GIF_ALPHA_CUTOFF = 128
# The palette's last entry is kept for transparency; the picture gets the other 255.
GIF_TRANSPARENT_INDEX = 255
_JPEG_QUALITY = 85
# Budget steps: JPEG qualities, then palette sizes for PNG and GIF.
_JPEG_QUALITIES = (75, 65, 55, 45, 35, 25)
_PALETTE_SIZES = (256, 128, 64, 32, 16)


class ByteBudgetError(ValueError):
    """The image cannot be encoded within the plan's `max_bytes`."""


def encode(image: Image.Image, fmt: ImageFormat, *, max_bytes: int | None = None) -> bytes:
    """`image` (RGBA) as `fmt` bytes: PNG keeps alpha, JPEG goes onto white, GIF keeps a cut-out.

    With `max_bytes`, the first encoding that fits (see the module's docstring); raises
    ByteBudgetError if none does.
    """
    smallest = 0
    for attempt in _attempts(image, fmt, max_bytes is not None):
        data = attempt()
        if max_bytes is None or len(data) <= max_bytes:
            return data
        smallest = len(data) if not smallest else min(smallest, len(data))
    width, height = image.size
    raise ByteBudgetError(
        f"a {width}x{height} {fmt.upper()} does not fit in {max_bytes:,} bytes "
        f"(the smallest encoding was {smallest:,} bytes)"
    )


def _attempts(image: Image.Image, fmt: ImageFormat, budget: bool) -> Iterator[Callable[[], bytes]]:
    """The encodings to try, best first; without a budget only the first."""
    transparent = has_transparency(image)
    if fmt == "png":
        yield partial(_png, image if transparent else image.convert("RGB"), 6)
        if budget:
            # Lossless while the image has no more colours than the palette.
            exact = image.getcolors(256) is not None
            for colours in _PALETTE_SIZES[:1] if exact else _PALETTE_SIZES:
                yield partial(_palette_png, image, colours, exact)
    elif fmt == "jpg":
        flat = on_white(image)
        for quality in (_JPEG_QUALITY, *(_JPEG_QUALITIES if budget else ())):
            yield partial(_jpeg, flat, quality)
    else:
        for colours in _PALETTE_SIZES if budget else _PALETTE_SIZES[:1]:
            yield partial(_gif, image, transparent, min(colours, 255))


def has_transparency(image: Image.Image) -> bool:
    """Whether any pixel of the RGBA `image` is not fully opaque."""
    low, _high = image.getchannel("A").getextrema()
    return bool(low != 255)


def on_white(image: Image.Image) -> Image.Image:
    """`image` flattened onto white, as RGB (email clients show no alpha in JPEG)."""
    flat = Image.new("RGB", image.size, _WHITE)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def palette_for(image: Image.Image, colours: int = 255) -> Image.Image:
    """A palette ("P" image) of at most `colours` for the RGB `image`.

    FASTOCTREE is by far the quickest of Pillow's adaptive quantizers (a few ms, where
    median cut takes over 100) and as accurate; flat colours come out exact.
    """
    return image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE)


def cut_out(indexed: Image.Image, alpha: Image.Image) -> None:
    """Make the pixels of `indexed` that `alpha` leaves less than half covered transparent."""
    entries = indexed.getpalette() or []
    indexed.putpalette(entries + [0] * (768 - len(entries)))
    transparent = alpha.point(lambda a: 255 if a < GIF_ALPHA_CUTOFF else 0)
    indexed.paste(GIF_TRANSPARENT_INDEX, mask=transparent)


def _png(picture: Image.Image, compress_level: int) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def _palette_png(image: Image.Image, colours: int, exact: bool) -> bytes:
    dither = Image.Dither.NONE if exact else Image.Dither.FLOYDSTEINBERG
    # An opaque picture is quantized without its alpha: no transparency chunk to carry.
    source = image if has_transparency(image) else image.convert("RGB")
    indexed = source.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=dither)
    return _png(indexed, 9)


def _jpeg(flat: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    flat.save(out, format="JPEG", quality=quality, optimize=False, subsampling="4:2:0")
    return out.getvalue()


def _gif(image: Image.Image, transparent: bool, colours: int) -> bytes:
    flat = on_white(image)
    # Alone, an octree palette bands gradients and photos, so the picture is mapped onto
    # its palette again with error diffusion, which hides that for a few ms more.
    indexed = flat.quantize(palette=palette_for(flat, colours), dither=Image.Dither.FLOYDSTEINBERG)
    out = io.BytesIO()
    if transparent:
        cut_out(indexed, image.getchannel("A"))
        indexed.save(out, format="GIF", transparency=GIF_TRANSPARENT_INDEX)
    else:
        indexed.save(out, format="GIF")
    return out.getvalue()


def _transparent_pixel() -> bytes:
    out = io.BytesIO()
    pixel = Image.new("P", (1, 1), 0)
    pixel.putpalette([0, 0, 0])
    pixel.save(out, format="GIF", transparency=0)
    return out.getvalue()


TRANSPARENT_GIF: bytes = _transparent_pixel()
"""A 1x1 fully transparent GIF: what an open shows when there is nothing to show."""
