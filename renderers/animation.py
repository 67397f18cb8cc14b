"""Animated GIFs whose frames differ only in small slots: countdown timers.

A timer's frames share everything but a few digits, so the picture is composed once and
only the slots are drawn, once per distinct content (the seconds' ones digit shows ten
different digits in a minute, not sixty). One palette is computed from the picture and
those slot drawings together, then every slot drawing is mapped onto it once; a frame
is the previous frame with the changed slots pasted in, and the GIF encoder stores only
the rectangle that changed. No frame is quantized on its own.

Several timers animate together, one second per frame: each slot is drawn between what
lies below and above its own timer, so layers keep their order.

Frame 1 is the value at `now`: Outlook on Windows shows only the first frame. The GIF
plays once and stays on its last frame rather than looping back to an older value.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from renderers.encode import (
    GIF_TRANSPARENT_INDEX,
    ByteBudgetError,
    cut_out,
    has_transparency,
    on_white,
    palette_for,
)
from renderers.paint import Rect

FRAME_MS = 1000
_COLOURS = (255, 128, 64, 32)


class Timeline(Protocol):
    """What an animated layer shows over its frames: a fixed part and slots that change."""

    @property
    def slots(self) -> Sequence[Rect]:
        """The canvas rectangles whose content changes (clipped to the canvas)."""
        ...

    @property
    def frames(self) -> Sequence[tuple[str, ...]]:
        """For each frame, what each slot shows (a digit, a label)."""
        ...

    def draw_fixed(self, canvas: Image.Image) -> None:
        """Draw what does not change (separators) onto the canvas."""
        ...

    def draw_slot(self, tile: Image.Image, slot: int, content: str) -> None:
        """Draw `content` of slot `slot` onto `tile`, an RGBA picture of that slot's rectangle."""
        ...


@dataclass(frozen=True)
class Placed:
    """An animated layer in its place: the canvas of everything below it (its own fixed
    part drawn) and the layers above it, if any, on a transparent canvas."""

    timeline: Timeline
    below: Image.Image
    above: Image.Image | None


class _Together:
    """Several placed timelines as one: their slots side by side, one frame per second
    for the longest (a shorter one stays on its last value)."""

    def __init__(self, placed: Sequence[Placed]) -> None:
        self.owners = [(p, slot) for p in placed for slot in range(len(p.timeline.slots))]
        self.slots = [p.timeline.slots[slot] for p, slot in self.owners]
        count = max(len(p.timeline.frames) for p in placed)
        self.frames = [
            tuple(
                content
                for p in placed
                for content in p.timeline.frames[min(i, len(p.timeline.frames) - 1)]
            )
            for i in range(count)
        ]


def animate_gif(
    picture: Image.Image, placed: Sequence[Placed], *, max_bytes: int | None = None
) -> bytes:
    """The GIF of the `placed` timelines animating together on `picture`, the whole still
    picture but for their slots (RGBA).

    With `max_bytes`, fewer frames and then fewer colours until it fits (a shorter
    animation still starts at the right value); ByteBudgetError if nothing fits.
    """
    together = _Together(placed)
    tiles = _tiles(together)
    transparent = has_transparency(picture) or any(has_transparency(t) for t in tiles.values())
    frame_count = len(together.frames)
    smallest = 0
    for colours in _COLOURS if max_bytes is not None else _COLOURS[:1]:
        indexed_plain, indexed_tiles = _indexed(picture, tiles, colours, transparent)
        count = frame_count
        while count >= 1:
            data = _gif(indexed_plain, indexed_tiles, together, count, transparent)
            if max_bytes is None or len(data) <= max_bytes:
                return data
            smallest = len(data) if not smallest else min(smallest, len(data))
            count = count // 2 if count > 1 else 0
    width, height = picture.size
    raise ByteBudgetError(
        f"a {width}x{height} animated GIF does not fit in {max_bytes:,} bytes "
        f"(the smallest encoding was {smallest:,} bytes)"
    )


def _tiles(together: _Together) -> dict[tuple[int, str], Image.Image]:
    """Each distinct slot content drawn once, with what is below and above its timeline."""
    tiles: dict[tuple[int, str], Image.Image] = {}
    for frame in together.frames:
        for slot, content in enumerate(frame):
            if (slot, content) in tiles:
                continue
            placed, own_slot = together.owners[slot]
            rect = together.slots[slot]
            box = (rect.left, rect.top, rect.right, rect.bottom)
            tile = placed.below.crop(box)
            placed.timeline.draw_slot(tile, own_slot, content)
            if placed.above is not None:
                tile.alpha_composite(placed.above.crop(box))
            tiles[(slot, content)] = tile
    return tiles


def _indexed(
    plain: Image.Image,
    tiles: dict[tuple[int, str], Image.Image],
    colours: int,
    transparent: bool,
) -> tuple[Image.Image, dict[tuple[int, str], Image.Image]]:
    """The picture and every tile mapped onto one palette computed from all of them."""
    places = _shelves(plain.size, [tiles[key].size for key in tiles])
    sheet_height = max(place[3] for place in places)
    sheet = Image.new("RGBA", (plain.width, sheet_height), (255, 255, 255, 255))
    sheet.paste(plain, (0, 0))
    for tile, place in zip(tiles.values(), places[1:], strict=True):
        sheet.paste(tile, place[:2])
    flat = on_white(sheet)
    # One mapping for all: error diffusion would make the tiles' background differ from
    # the picture's around them, so the picture's flat colours must be in the palette.
    indexed = flat.quantize(palette=palette_for(flat, colours), dither=Image.Dither.NONE)
    if transparent:
        cut_out(indexed, sheet.getchannel("A"))
    indexed_plain = indexed.crop(places[0])
    return indexed_plain, {
        key: indexed.crop(place) for key, place in zip(tiles, places[1:], strict=True)
    }


def _shelves(
    first: tuple[int, int], sizes: list[tuple[int, int]]
) -> list[tuple[int, int, int, int]]:
    """Boxes for `first` at the top and then each of `sizes` in rows as wide as `first`.

    One sheet holds the picture and every tile, so that one quantization gives one
    palette for all; packed in rows, the sheet is a little larger than the picture.
    """
    width = first[0]
    places = [(0, 0, *first)]
    left, top, row_height = 0, first[1], 0
    for tile_width, tile_height in sizes:
        if left + tile_width > width and left > 0:
            left, top, row_height = 0, top + row_height, 0
        places.append((left, top, left + tile_width, top + tile_height))
        left += tile_width
        row_height = max(row_height, tile_height)
    return places


def _gif(
    plain: Image.Image,
    tiles: dict[tuple[int, str], Image.Image],
    together: _Together,
    count: int,
    transparent: bool,
) -> bytes:
    frames: list[Image.Image] = []
    shown: tuple[str, ...] | None = None
    for contents in together.frames[:count]:
        frame = (frames[-1] if frames else plain).copy()
        for slot, content in enumerate(contents):
            if shown is None or shown[slot] != content:
                rect = together.slots[slot]
                frame.paste(tiles[(slot, content)], (rect.left, rect.top))
        frames.append(frame)
        shown = contents
    out = io.BytesIO()
    options: dict[str, object] = {"duration": FRAME_MS, "optimize": False}
    if transparent:
        options["transparency"] = GIF_TRANSPARENT_INDEX
    if len(frames) == 1:
        frames[0].save(out, format="GIF", **options)
    else:
        frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], **options)
    return out.getvalue()
