"""PNGs that reuse the compressed rows of a static canvas: exact pixels, valid files."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from renderers.encode import encode
from renderers.resources import builtin_fonts
from renderers.static_png import CHUNK_ROWS, StaticPicture, _adler32_combine

WIDTH, HEIGHT = 300, 101  # not a whole number of chunks: the last one is short
FONT = ImageFont.truetype(str(builtin_fonts()["sans"]), 24)


def photo() -> Image.Image:
    """Smooth noise: rows compress best filtered against their neighbours."""
    noise = Image.effect_noise((WIDTH, HEIGHT), 60).filter(ImageFilter.GaussianBlur(3))
    ramp = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    mirrored = noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return Image.merge("RGB", (noise, ramp, mirrored)).convert("RGBA")


BASES: dict[str, Callable[[], Image.Image]] = {
    "white": lambda: Image.new("RGBA", (WIDTH, HEIGHT), "white"),
    "gradient": lambda: Image.linear_gradient("L").resize((WIDTH, HEIGHT)).convert("RGBA"),
    "photo": photo,
}


def with_text(base: Image.Image, text: str, y: int) -> Image.Image:
    image = base.copy()
    ImageDraw.Draw(image).text((12, y), text, font=FONT, fill="#c81e1e")
    return image


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    """The PNG's chunks as (type, data), each checked against its CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        position += length + 12
    return found


def row_filters(data: bytes, width: int, channels: int) -> list[int]:
    """The filter type of every row (zlib checks the stream's Adler-32 on the way)."""
    stream = zlib.decompress(b"".join(body for kind, body in chunks_of(data) if kind == b"IDAT"))
    stride = width * channels + 1
    assert len(stream) % stride == 0
    return list(stream[::stride])


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_same_picture(data: bytes, expected: Image.Image) -> Image.Image:
    """`data` decodes to `expected`'s pixels, in the colour type `encode` would choose."""
    image = decoded(data)
    assert image.mode == decoded(encode(expected, "png")).mode
    assert image.convert("RGBA").tobytes() == expected.tobytes()
    assert [kind for kind, _ in chunks_of(data)] == [b"IHDR", b"IDAT", b"IEND"]
    return image


@pytest.mark.parametrize("base_name", sorted(BASES))
@pytest.mark.parametrize("y", [0, 5, CHUNK_ROWS * 4, HEIGHT - 20])
def test_text_over_a_static_canvas_decodes_to_the_exact_pixels(base_name: str, y: int) -> None:
    base = BASES[base_name]()
    static = StaticPicture(base)
    for name in ("Ann", "Małgorzata", "Zoë"):
        image = with_text(base, f"Hello {name}", y)
        data = static.png(image)
        assert data is not None
        assert_same_picture(data, image)


def test_an_unchanged_canvas_is_all_reused_rows() -> None:
    base = photo()
    data = StaticPicture(base).png(base.copy())
    assert data is not None
    assert_same_picture(data, base)


@pytest.mark.parametrize("base_name", sorted(BASES))
def test_the_bytes_stay_close_to_a_whole_image_encoding(base_name: str) -> None:
    base = BASES[base_name]()
    static = StaticPicture(base)
    image = with_text(base, "Hello Françoise", 30)
    data = static.png(image)
    assert data is not None
    assert len(data) < 1.15 * len(encode(image, "png"))


def test_changed_rows_take_the_filter_that_suits_what_is_below_them() -> None:
    """Text over flat colour compresses best unfiltered (though the colour alone is
    smallest filtered by the row above); over a photo, filtered by the row above."""
    dark = Image.new("RGBA", (WIDTH, HEIGHT), "#1b1f3b")
    for base, filter_type in ((BASES["white"](), 0), (dark, 0), (photo(), 2)):
        image = with_text(base, "Hello Ann", CHUNK_ROWS * 4 + 2)
        data = StaticPicture(base).png(image)
        assert data is not None
        filters = row_filters(data, WIDTH, 3)
        changed = filters[CHUNK_ROWS * 4 : CHUNK_ROWS * 7]
        assert changed == [filter_type] * len(changed)
        # The first row of a reused chunk never reads the (changed) row above it.
        assert filters[CHUNK_ROWS * 8] in (0, 1)


def test_most_rows_changed_leaves_the_whole_image_to_the_encoder() -> None:
    base = BASES["white"]()
    static = StaticPicture(base)
    image = base.copy()
    image.paste("#123456", (0, 0, 10, HEIGHT // 2 + CHUNK_ROWS))
    assert static.png(image) is None
    image = base.copy()
    image.paste("#123456", (0, 0, 10, HEIGHT // 2 - CHUNK_ROWS))
    assert static.png(image) is not None


def test_transparency_anywhere_makes_an_rgba_png_and_only_then() -> None:
    cut_out = BASES["white"]()
    cut_out.paste((0, 0, 0, 0), (0, HEIGHT - 10, WIDTH, HEIGHT))  # outside the text's rows
    image = with_text(cut_out, "Hello Ann", 10)
    data = StaticPicture(cut_out).png(image)
    assert data is not None
    assert assert_same_picture(data, image).mode == "RGBA"

    hole = BASES["white"]()
    hole.paste((0, 0, 0, 0), (100, 10, 200, 30))  # inside them: the text covers it
    image = hole.copy()
    image.paste("#0b6e4f", (0, 8, WIDTH, 32))
    data = StaticPicture(hole).png(image)
    assert data is not None
    assert assert_same_picture(data, image).mode == "RGB"

    opaque = BASES["gradient"]()
    image = with_text(opaque, "Hello Ann", 10)
    image.paste((255, 0, 0, 128), (20, 12, 60, 20))  # translucent pixels in the text's rows
    data = StaticPicture(opaque).png(image)
    assert data is not None
    assert assert_same_picture(data, image).mode == "RGBA"


def test_adler32_of_joined_bytes_is_combined_from_the_parts() -> None:
    rng = random.Random(5)
    for first_length, second_length in ((0, 0), (1, 0), (0, 7), (300, 70_000), (65_521, 131_042)):
        first = rng.randbytes(first_length)
        second = rng.randbytes(second_length)
        combined = _adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)
