"""PNG encoding that compresses again only the rows a render changed.

A personalized image is mostly its static layers (a background, a photo, a logo) with
a little drawn over them (a name). Encoding the whole image on every open spends most
of the render compressing the same rows again: a 400x100 greeting costs ~1.3 ms in
Pillow's encoder, of which the name's rows need a fraction; a 1200x400 one ~15 ms.

`StaticPicture` holds the composed static canvas and, once per colour type, its rows
compressed in independent chunks of `CHUNK_ROWS` rows: each chunk is its own deflate
stream flushed to a byte boundary, so chunks can be joined in any order with others.
An image drawn over the canvas is compared with it; the chunks holding changed rows
are filtered and compressed now, the others are copied, and the zlib checksum of the
whole is combined from the chunks' checksums. The result is an ordinary PNG with the
same pixels and colour type as `renderers.encode` makes; when more than half the rows
changed there is nothing to reuse and the caller encodes the whole image instead.

PNG filters make a row depend on the row above; the first row of every stored chunk
is filtered without it (None or Sub), so any row above it may change.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageChops

CHUNK_ROWS = 8
# Changed rows are compressed at level 3: on text over flat colour, photos and
# gradients it takes a quarter of level 6's CPU for 10-15 % more bytes in those rows.
CHANGED_ROWS_LEVEL = 3
# Rows compressed once per static canvas get the smallest output money can buy.
STATIC_ROWS_LEVEL = 9
_NONE, _SUB, _UP = 0, 1, 2
_CANDIDATE_FILTERS = (_NONE, _SUB, _UP)
_FILTER_GAIN = 0.8
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The end of a zlib stream after sync-flushed parts: an empty final block (fixed codes).
_FINAL_BLOCK = b"\x03\x00"
_ZLIB_HEADER = b"\x78\x9c"  # deflate, 32 KiB window
_COLOUR_TYPES = {"RGB": 2, "RGBA": 6}
_ADLER_BASE = 65521


@dataclass(frozen=True, slots=True)
class _Chunk:
    deflated: bytes  # a raw deflate stream ending at a byte boundary (sync flush)
    adler: int  # Adler-32 of the filtered rows
    length: int  # bytes of filtered rows
    # Compressed size of these rows under each candidate filter: the best predicts
    # the filter for rows drawn over them.
    sizes: tuple[int, ...]


class StaticPicture:
    """A composed static canvas (RGBA) and its PNG rows, compressed once per colour type.

    Shared by render threads and never modified: the rows of each colour type are built
    on first use (two threads may both build them; either result is the same).
    """

    def __init__(self, canvas: Image.Image) -> None:
        self.canvas = canvas
        self._chunks: dict[str, tuple[_Chunk, ...]] = {}
        self._opaque_chunks: tuple[bool, ...] | None = None

    @property
    def nbytes(self) -> int:
        """Memory held, counted as twice the canvas: its compressed rows are at most that."""
        return 2 * self.canvas.width * self.canvas.height * 4

    def png(self, image: Image.Image) -> bytes | None:
        """`image` (the canvas with more drawn on it) as PNG; None if most rows changed."""
        width, height = image.size
        changed = ImageChops.difference(image, self.canvas).getbbox(alpha_only=False)
        first, end = (0, 0) if changed is None else _chunk_span(changed[1], changed[3])
        if (end - first) * CHUNK_ROWS * 2 > height:
            return None
        top, bottom = first * CHUNK_ROWS, min(height, end * CHUNK_ROWS)
        band = image.crop((0, top, width, bottom))
        # The colour type `encode` would choose: RGBA only if some pixel is not opaque.
        opaque_chunks = self._opaque_chunks or self._find_opaque_chunks()
        opaque = all(opaque_chunks[:first] + opaque_chunks[end:]) and (
            bottom == top or _opaque(band)
        )
        mode = "RGB" if opaque else "RGBA"
        chunks = self._chunks.get(mode) or self._build(mode)
        redrawn: list[_Chunk] = []
        if bottom > top:
            above = _as(image.crop((0, top - 1, width, top)), mode) if top else None
            rows = _filtered(_as(band, mode), above, _best_filter(chunks[first:end]))
            redrawn.append(
                _Chunk(_deflate(rows, CHANGED_ROWS_LEVEL), zlib.adler32(rows), len(rows), ())
            )
        parts = (*chunks[:first], *redrawn, *chunks[end:])
        adler = 1
        for part in parts:
            adler = _adler32_combine(adler, part.adler, part.length)
        stream = b"".join(
            (
                _ZLIB_HEADER,
                *(part.deflated for part in parts),
                _FINAL_BLOCK,
                struct.pack(">I", adler),
            )
        )
        header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[mode], 0, 0, 0)
        return b"".join(
            (
                _SIGNATURE,
                _png_chunk(b"IHDR", header),
                _png_chunk(b"IDAT", stream),
                _png_chunk(b"IEND", b""),
            )
        )

    def _build(self, mode: str) -> tuple[_Chunk, ...]:
        picture = _as(self.canvas, mode)
        width, height = picture.size
        stride = width * len(mode) + 1
        adaptive = _pillow_filtered(picture)
        candidates = [_filtered(picture, None, kind) for kind in _CANDIDATE_FILTERS]
        chunks = []
        for top in range(0, height, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, height - top)
            start, end = top * stride, (top + rows) * stride
            first_row = adaptive[start : start + stride]
            if first_row[0] not in (_NONE, _SUB):  # it would read the row above
                first_row = candidates[_SUB][start : start + stride]
            filtered = first_row + adaptive[start + stride : end]
            sizes = tuple(len(_deflate(c[start:end], CHANGED_ROWS_LEVEL)) for c in candidates)
            chunks.append(
                _Chunk(
                    _deflate(filtered, STATIC_ROWS_LEVEL),
                    zlib.adler32(filtered),
                    len(filtered),
                    sizes,
                )
            )
        built = tuple(chunks)
        self._chunks[mode] = built
        return built

    def _find_opaque_chunks(self) -> tuple[bool, ...]:
        """For each chunk of rows, whether all its pixels are opaque."""
        width, height = self.canvas.size
        found = tuple(
            _opaque(self.canvas.crop((0, top, width, min(height, top + CHUNK_ROWS))))
            for top in range(0, height, CHUNK_ROWS)
        )
        self._opaque_chunks = found
        return found


def _chunk_span(top: int, bottom: int) -> tuple[int, int]:
    """The chunks holding rows `top` to `bottom` (exclusive), as first and end indices."""
    return top // CHUNK_ROWS, -(-bottom // CHUNK_ROWS)


def _opaque(picture: Image.Image) -> bool:
    low, _high = picture.getchannel("A").getextrema()
    return bool(low == 255)


def _as(picture: Image.Image, mode: str) -> Image.Image:
    return picture if picture.mode == mode else picture.convert(mode)


def _best_filter(chunks: Sequence[_Chunk]) -> int:
    """The filter for rows drawn over these chunks of the static canvas: none, unless
    another compressed those static rows at least a fifth smaller. Text and shapes over
    flat colour or gradients compress best unfiltered (whatever suits the background
    alone); over a photo, filtered like the photo."""
    totals = [
        sum(chunk.sizes[index] for chunk in chunks) for index in range(len(_CANDIDATE_FILTERS))
    ]
    best = totals.index(min(totals))
    if totals[best] >= _FILTER_GAIN * totals[_CANDIDATE_FILTERS.index(_NONE)]:
        return _NONE
    return _CANDIDATE_FILTERS[best]


def _filtered(picture: Image.Image, above: Image.Image | None, kind: int) -> bytes:
    """`picture`'s rows as PNG filtered scanlines, each row filtered by `kind`.

    `above` is the row above the first (None for the top of the image: zeros).
    """
    width, height = picture.size
    if kind == _NONE:
        raw = picture.tobytes()
    else:
        shifted = Image.new(picture.mode, picture.size)
        if kind == _SUB:  # each byte minus the same channel of the pixel to its left
            shifted.paste(picture.crop((0, 0, width - 1, height)), (1, 0))
        else:  # _UP: each byte minus the same byte of the row above
            if above is not None:
                shifted.paste(above, (0, 0))
            shifted.paste(picture.crop((0, 0, width, height - 1)), (0, 1))
        raw = ImageChops.subtract_modulo(picture, shifted).tobytes()
    stride = width * len(picture.getbands())
    tag = bytes((kind,))
    return b"".join([tag + raw[start : start + stride] for start in range(0, len(raw), stride)])


def _pillow_filtered(picture: Image.Image) -> bytes:
    """The filtered scanlines Pillow's encoder chooses (adaptively, row by row)."""
    out = BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    data = out.getvalue()
    stream = []
    position = len(_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        if data[position + 4 : position + 8] == b"IDAT":
            stream.append(data[position + 8 : position + 8 + length])
        position += length + 12
    return zlib.decompress(b"".join(stream))


def _deflate(rows: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(rows) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    remainder = second_length % _ADLER_BASE
    low = first & 0xFFFF
    high = (remainder * low) % _ADLER_BASE
    low = (low + (second & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    high = (high + (first >> 16) + (second >> 16) + _ADLER_BASE - remainder) % _ADLER_BASE
    return low | (high << 16)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
    )
