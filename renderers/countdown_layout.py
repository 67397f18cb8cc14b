"""Where a countdown's numbers, labels and separators go, and drawing them.

Each unit is a group: its number above, its label below, groups spread evenly across the
box with a separator between numbers. Every digit has a slot of the widest digit's
width (tabular figures: nothing moves when a 1 becomes a 0), and each label a slot the
width of its group; no two slots overlap, because animation pastes them.

A layout depends on the layer, the scale, the number of digits of the largest unit and
the visible part of the box, not on the time, so it is computed once and cached: a timer
rendered every second for many recipients lays itself out once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from renderers.countdown_labels import all_labels, label
from renderers.glyphs import load_font
from renderers.layers.text import transformed
from renderers.paint import Rect
from renderers.pen import Pen
from renderers.runs import Ruler, line_runs

if TYPE_CHECKING:
    from renderers.layers.countdown import CountdownLayer

DIGITS = "0123456789"
MIN_SIZE, MAX_SIZE = 4, 400
# Label size as a share of the digits' size, when the layer does not say.
_LABEL_SHARE = 0.28
# Between digits and label, and around a separator: shares of the digits' size.
_LABEL_GAP = 0.12
_GROUP_GAP = 0.25
_REFERENCE_PX = 100


@dataclass(frozen=True, slots=True)
class _Group:
    """One unit's number and label, in canvas pixels."""

    left: float
    width: float
    digits: int


@dataclass(frozen=True, slots=True)
class _Slot:
    rect: Rect  # clipped to the visible box: the tile
    whole: Rect  # where the content is centred
    kind: str  # "digit" or "label"
    group: int
    position: int  # which digit of the group's number


@functools.lru_cache(maxsize=256)
def countdown_layout(
    layer: CountdownLayer, scale: int, digits: tuple[int, ...], visible: Rect
) -> CountdownLayout:
    """The layout of `layer` at `scale`, with `digits` per group, clipped to `visible`."""
    return CountdownLayout(layer, scale, digits, visible)


class CountdownLayout:
    """Sizes, groups and slots of one countdown, and how to draw each slot's content."""

    def __init__(
        self, layer: CountdownLayer, scale: int, digits: tuple[int, ...], visible: Rect
    ) -> None:
        self.layer = layer
        self._visible = visible
        self._rulers = (Ruler(layer.font, _REFERENCE_PX), Ruler(layer.font, _REFERENCE_PX))
        box = Rect(
            layer.box[0] * scale,
            layer.box[1] * scale,
            (layer.box[0] + layer.box[2]) * scale,
            (layer.box[1] + layer.box[3]) * scale,
        )
        size = layer.size or self._fitted_size(digits, scale, box)
        self._px = size * scale
        self._label_px = self._label_size(size) * scale
        width, height = self._extent(digits, self._px, self._label_px)
        left = box.left + (box.width - width) / 2
        top = box.top + (box.height - height) / 2
        ascent = -load_font(layer.font.primary, self._px).getbbox(DIGITS, anchor="ls")[1]
        self._baseline = round(top + ascent)
        label_ascent = load_font(layer.font.primary, self._label_px).getmetrics()[0]
        self._label_baseline = round(self._baseline + _LABEL_GAP * self._px + label_ascent)
        self._groups = self._spread(digits, left)
        self._slots = self._place_slots()
        self.slots = [slot.rect for slot in self._slots]

    def contents(self, parts: tuple[int, ...]) -> tuple[str, ...]:
        """What each slot shows for these unit values."""
        shown: list[str] = []
        for slot in self._slots:
            value = parts[slot.group]
            if slot.kind == "label":
                shown.append(self._label(slot.group, value))
            else:
                shown.append(f"{value:0{self._groups[slot.group].digits}d}"[slot.position])
        return tuple(shown)

    def draw_separators(self, canvas: Image.Image) -> None:
        separator = self.layer.separator
        if not separator or self._visible.width == 0:
            return
        ruler = self._rulers[0]
        pen = Pen((self._visible.width, self._visible.height))
        runs = line_runs(separator, self.layer.font, rtl=False)
        width = ruler.width(separator, self._px)
        for before, after in zip(self._groups, self._groups[1:], strict=False):
            middle = (before.left + before.width + after.left) / 2
            left = round(middle - width / 2) - self._visible.left
            pen.line(runs, ruler, left, self._baseline - self._visible.top, self._px)
        color = self.layer.color
        pen.paint(canvas, (self._visible.left, self._visible.top), color, color)

    def draw_slot(self, tile: Image.Image, index: int, content: str) -> None:
        """Draw `content` centred in slot `index`, onto `tile` (that slot's picture)."""
        slot = self._slots[index]
        if slot.kind == "digit":
            ruler, px, baseline, color = self._rulers[0], self._px, self._baseline, self.layer.color
        else:
            ruler, px, baseline = self._rulers[1], self._label_px, self._label_baseline
            color = self.layer.label_color or self.layer.color
        left = slot.whole.left + (slot.whole.width - ruler.width(content, px)) / 2
        pen = Pen(tile.size)
        runs = line_runs(content, self.layer.font, rtl=False)
        pen.line(runs, ruler, round(left) - slot.rect.left, baseline - slot.rect.top, px)
        pen.paint(tile, (0, 0), color, color)

    def _label_size(self, size: int) -> int:
        return self.layer.label_size or max(MIN_SIZE, round(size * _LABEL_SHARE))

    def _label(self, group: int, value: int) -> str:
        short = self.layer.labels == "short"
        word = label(self.layer.lang, self.layer.units[group], value, short=short)
        return transformed(word, self.layer.transform)

    def _labels_of(self, group: int) -> tuple[str, ...]:
        """Every label the group can show: the widest one sizes the group."""
        if self.layer.labels == "none":
            return ()
        short = self.layer.labels == "short"
        forms = all_labels(self.layer.lang, self.layer.units[group], short=short)
        return tuple(transformed(form, self.layer.transform) for form in forms)

    def _group_widths(self, digits: tuple[int, ...], px: int, label_px: int) -> list[float]:
        digit_ruler, label_ruler = self._rulers
        advance = max(digit_ruler.width(digit, px) for digit in DIGITS)
        widths = []
        for group, count in enumerate(digits):
            labels = [label_ruler.width(word, label_px) for word in self._labels_of(group)]
            widths.append(max([count * advance, *labels]))
        return widths

    def _gap(self, px: int) -> float:
        return self._rulers[0].width(self.layer.separator, px) + 2 * _GROUP_GAP * px

    def _extent(self, digits: tuple[int, ...], px: int, label_px: int) -> tuple[float, float]:
        """The countdown's width and height at these sizes, in canvas pixels."""
        width = sum(self._group_widths(digits, px, label_px)) + self._gap(px) * (len(digits) - 1)
        height = float(-load_font(self.layer.font.primary, px).getbbox(DIGITS, anchor="ls")[1])
        if self.layer.labels != "none":
            label_ascent, label_descent = load_font(self.layer.font.primary, label_px).getmetrics()
            height += _LABEL_GAP * px + label_ascent + label_descent
        return width, height

    def _fitted_size(self, digits: tuple[int, ...], scale: int, box: Rect) -> int:
        """The largest digits size (block pixels) at which the countdown fits its box."""

        def fits(size: int) -> bool:
            label_px = self._label_size(size) * scale
            width, height = self._extent(digits, size * scale, label_px)
            return width <= box.width and height <= box.height

        low, high = MIN_SIZE, MAX_SIZE
        if not fits(low):
            return low
        while high - low > 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        return high if fits(high) else low

    def _spread(self, digits: tuple[int, ...], left: float) -> list[_Group]:
        groups = []
        gap = self._gap(self._px)
        for count, width in zip(
            digits, self._group_widths(digits, self._px, self._label_px), strict=True
        ):
            groups.append(_Group(left, width, count))
            left += width + gap
        return groups

    def _place_slots(self) -> list[_Slot]:
        """A slot per digit and one per label, none overlapping (tiles are pasted)."""
        advance = max(self._rulers[0].width(digit, self._px) for digit in DIGITS)
        font = load_font(self.layer.font.primary, self._px)
        _, ink_top, _, ink_bottom = font.getbbox(DIGITS, anchor="ls")
        digits_top = self._baseline + math.floor(ink_top) - 1
        digits_bottom = self._baseline + math.ceil(max(ink_bottom, 0)) + 1
        label_font = load_font(self.layer.font.primary, self._label_px)
        label_ascent, label_descent = label_font.getmetrics()
        label_top = max(self._label_baseline - label_ascent, digits_bottom)
        slots: list[_Slot] = []
        for index, group in enumerate(self._groups):
            digits_left = group.left + (group.width - group.digits * advance) / 2
            for position in range(group.digits):
                left = digits_left + position * advance
                rect = Rect(round(left), digits_top, round(left + advance), digits_bottom)
                slots.extend(self._clipped(rect, "digit", index, position))
            if self.layer.labels != "none":
                rect = Rect(
                    math.floor(group.left),
                    label_top,
                    math.ceil(group.left + group.width),
                    self._label_baseline + label_descent,
                )
                slots.extend(self._clipped(rect, "label", index, 0))
        return slots

    def _clipped(self, rect: Rect, kind: str, group: int, position: int) -> list[_Slot]:
        """The slot, clipped to the visible box; none if nothing of it is visible."""
        visible = self._visible
        clipped = Rect(
            max(rect.left, visible.left),
            max(rect.top, visible.top),
            min(rect.right, visible.right),
            min(rect.bottom, visible.bottom),
        )
        if clipped.width <= 0 or clipped.height <= 0:
            return []
        return [_Slot(clipped, rect, kind, group, position)]
