"""The "countdown" layer: days, hours, minutes and seconds left until a deadline.

`until` is an ISO 8601 time. With an offset (`2026-12-24T18:00:00+01:00`, `...Z`) it is
one instant for everyone; without one (`2026-12-24T18:00`) it is that wall-clock time in
the recipient's zone (the zone of the plan's `now`), so it ends at local midnight
everywhere. `plus_hours` moves it later: an evergreen deadline such as 48 hours after a
profile's signup time (`until: "{{ profile.signed_up_at }}"`, `plus_hours: 48`).

In a GIF the timer counts down over `frames` one-second frames, the first showing the
value at `now`; every other format shows that first frame. Past the deadline it shows
zeros (the server serves the block's `expired` variant instead when there is one: it
asks `LayerKind.ends_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from renderers import fields
from renderers.countdown_labels import LANGUAGES, SECONDS, UNITS, Unit
from renderers.countdown_layout import DIGITS, MAX_SIZE, MIN_SIZE, countdown_layout
from renderers.fields import BOX, RGBA, Box, Field, FieldError
from renderers.fonts import FontStack
from renderers.layers.base import FieldValues, Layer, LayerKind
from renderers.layers.text import COLOR, FONT, TRANSFORMS, Transform
from renderers.paint import Rect, scaled
from renderers.runs import itemize

if TYPE_CHECKING:
    from PIL import Image

MAX_FRAMES = 60
MAX_PLUS_HOURS = 24 * 366

Labels = Literal["long", "short", "none"]


@dataclass(frozen=True, slots=True)
class CountdownLayer(Layer):
    kind: ClassVar[str] = "countdown"
    box: Box
    until: datetime  # naive: a wall-clock time in the recipient's zone
    plus_hours: float
    units: tuple[Unit, ...]  # largest first; the largest takes what the others leave
    lang: str
    labels: Labels
    font: FontStack
    size: int | None  # digits, block pixels; None: as large as the box allows
    label_size: int | None
    color: RGBA
    label_color: RGBA | None  # None: `color`
    separator: str
    transform: Transform  # of the labels
    frames: int  # in a GIF; 1 to MAX_FRAMES

    def deadline(self, now: datetime) -> datetime:
        """When the countdown reaches zero, as an aware time in `now`'s zone.

        A time without an offset is read in `now`'s zone: a wall-clock time the clocks
        skip (a spring-forward gap) means the instant an hour later, an ambiguous one
        (autumn) the first of the two. `plus_hours` are real elapsed hours.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        until = (
            self.until if self.until.tzinfo is not None else self.until.replace(tzinfo=now.tzinfo)
        )
        return (until.astimezone(UTC) + timedelta(hours=self.plus_hours)).astimezone(now.tzinfo)

    def remaining(self, now: datetime) -> int:
        """Whole seconds left at `now` (0 once the deadline has passed)."""
        # In UTC: Python subtracts two times of one zone by their wall clocks.
        left = self.deadline(now).astimezone(UTC) - now.astimezone(UTC)
        return max(0, math.floor(left.total_seconds()))

    def parts(self, seconds: int) -> tuple[int, ...]:
        """`seconds` as a number per unit of `units`, the largest unit taking any excess."""
        values: list[int] = []
        for unit in self.units:  # largest first
            values.append(seconds // SECONDS[unit])
            seconds -= values[-1] * SECONDS[unit]
        return tuple(values)

    def frame_texts(self, now: datetime, frames: int | None = None) -> list[str]:
        """What each frame shows, as text (`"02:13:59:07"`): for tests and previews."""
        remaining = self.remaining(now)
        count = self.frames if frames is None else frames
        return [
            self.separator.join(f"{v:02d}" for v in self.parts(max(0, remaining - i)))
            for i in range(count)
        ]


def until_time(value: object, resources: fields.Resources) -> datetime:
    """An ISO 8601 date or date and time, with or without an offset."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value.strip():
        raise FieldError("must be an ISO 8601 time, e.g. 2026-12-24T18:00:00+01:00")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise FieldError(
                f'not an ISO 8601 time: "{text}" (e.g. 2026-12-24T18:00:00+01:00)'
            ) from None
    if not 2000 <= parsed.year <= 2200:
        raise FieldError("must be between the years 2000 and 2200")
    return parsed


def unit_list(value: object, resources: fields.Resources) -> tuple[Unit, ...]:
    """Units to show, as a list or a comma-separated string, e.g. ["hours", "minutes"]."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise FieldError(f"must be a list of units from: {', '.join(UNITS)}")
    chosen = {str(item).strip().lower() for item in items}
    unknown = sorted(chosen - set(UNITS))
    if unknown or len(chosen) != len(items):
        raise FieldError(f"must be a list of different units from: {', '.join(UNITS)}")
    return tuple(unit for unit in UNITS if unit in chosen)


def separator(value: object, resources: fields.Resources) -> str:
    """What goes between the numbers: at most 3 characters, may be empty."""
    if not isinstance(value, str) or len(value) > 3:
        raise FieldError("must be a string of at most 3 characters")
    return value


UNTIL: Field[datetime] = Field("until", until_time)
PLUS_HOURS: Field[float] = Field(
    "plus_hours", fields.number_range(0, MAX_PLUS_HOURS), default=0.0, templated=False
)
UNITS_SHOWN: Field[tuple[Unit, ...]] = Field("units", unit_list, default=UNITS, templated=False)
LANG: Field[str] = Field("lang", fields.choice(*LANGUAGES), default="en")
LABELS: Field[Labels] = Field(
    "labels", fields.choice("long", "short", "none"), default="long", templated=False
)
SIZE: Field[int | None] = Field(
    "size", fields.int_range(MIN_SIZE, MAX_SIZE), default=None, templated=False
)
LABEL_SIZE: Field[int | None] = Field(
    "label_size", fields.int_range(MIN_SIZE, MAX_SIZE), default=None, templated=False
)
LABEL_COLOR: Field[RGBA | None] = Field("label_color", fields.color, default=None)
SEPARATOR: Field[str] = Field("separator", separator, default=":", templated=False)
LABEL_TRANSFORM: Field[Transform] = Field("transform", fields.choice(*TRANSFORMS), default="upper")
FRAMES: Field[int] = Field(
    "frames", fields.int_range(1, MAX_FRAMES), default=MAX_FRAMES, templated=False
)


class CountdownKind(LayerKind[CountdownLayer]):
    layer_type = CountdownLayer
    fields = (
        BOX,
        UNTIL,
        PLUS_HOURS,
        UNITS_SHOWN,
        LANG,
        LABELS,
        FONT,
        SIZE,
        LABEL_SIZE,
        COLOR,
        LABEL_COLOR,
        SEPARATOR,
        LABEL_TRANSFORM,
        FRAMES,
    )
    needs_clock = True
    draws_inside_box = True
    can_end = True
    animates = True

    def build(self, values: FieldValues) -> CountdownLayer:
        layer = CountdownLayer(
            box=values[BOX],
            until=values[UNTIL],
            plus_hours=float(values[PLUS_HOURS]),
            units=values[UNITS_SHOWN],
            lang=values[LANG],
            labels=values[LABELS],
            font=values[FONT],
            size=values[SIZE],
            label_size=values[LABEL_SIZE],
            color=values[COLOR],
            label_color=values[LABEL_COLOR],
            separator=values[SEPARATOR],
            transform=values[LABEL_TRANSFORM],
            frames=values[FRAMES],
        )
        itemize(DIGITS + layer.separator, layer.font)  # raises if the fonts cannot draw them
        return layer

    def paint(
        self, canvas: Image.Image, layer: CountdownLayer, scale: int, now: datetime | None
    ) -> None:
        """The first frame, drawn like any other layer (PNG, JPEG, a GIF of one frame)."""
        face = countdown_face(canvas, layer, scale, now, frames=1)
        face.draw_fixed(canvas)
        for slot, content in enumerate(face.frames[0]):
            rect = face.slots[slot]
            box = (rect.left, rect.top, rect.right, rect.bottom)
            tile = canvas.crop(box)
            face.draw_slot(tile, slot, content)
            canvas.paste(tile, box[:2])

    def ends_at(self, layer: CountdownLayer, now: datetime) -> datetime:
        return layer.deadline(now)

    def frames(self, layer: CountdownLayer) -> int:
        return layer.frames

    def timeline(
        self, canvas: Image.Image, layer: CountdownLayer, scale: int, now: datetime | None
    ) -> CountdownFace:
        return countdown_face(canvas, layer, scale, now, frames=None)


def countdown_face(
    canvas: Image.Image,
    countdown: CountdownLayer,
    scale: int,
    now: datetime | None,
    *,
    frames: int | None,
) -> CountdownFace:
    """The countdown laid out on `canvas` for `frames` frames (None: its own) from `now`."""
    if now is None:
        raise ValueError("a countdown layer needs the plan's `now`")
    return CountdownFace(
        countdown, canvas, scale, now, countdown.frames if frames is None else frames
    )


class CountdownFace:
    """A countdown over its frames: the slots of its layout and what each shows per frame."""

    def __init__(
        self, layer: CountdownLayer, canvas: Image.Image, scale: int, now: datetime, frames: int
    ) -> None:
        remaining = layer.remaining(now)
        values = [layer.parts(max(0, remaining - i)) for i in range(frames)]
        digits = (max(2, len(str(values[0][0]))), *([2] * (len(layer.units) - 1)))
        visible = scaled(layer.box, scale).clip(canvas) or Rect(0, 0, 0, 0)
        self._layout = countdown_layout(layer, scale, digits, visible)
        self.slots = self._layout.slots
        self.frames = [self._layout.contents(parts) for parts in values]

    def draw_fixed(self, canvas: Image.Image) -> None:
        self._layout.draw_separators(canvas)

    def draw_slot(self, tile: Image.Image, slot: int, content: str) -> None:
        self._layout.draw_slot(tile, slot, content)
