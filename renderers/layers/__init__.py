"""The layer kinds, by the name a layer's "type" gives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from renderers.layers.barcode import BarcodeKind
from renderers.layers.base import LayerKind
from renderers.layers.countdown import CountdownKind
from renderers.layers.fill import FillKind
from renderers.layers.image import ImageKind
from renderers.layers.progress import ProgressKind
from renderers.layers.qr import QrKind
from renderers.layers.rect import RectKind
from renderers.layers.text import TextKind

if TYPE_CHECKING:
    from renderers.plan import Layer

LAYER_KINDS: dict[str, LayerKind] = {
    "fill": FillKind(),
    "rect": RectKind(),
    "text": TextKind(),
    "image": ImageKind(),
    "countdown": CountdownKind(),
    "progress": ProgressKind(),
    "qr": QrKind(),
    "barcode": BarcodeKind(),
}


def needs_clock(layers: Iterable[Layer]) -> bool:
    """Whether any of `layers` is drawn from the plan's `now` (so its plan needs one)."""
    return any(LAYER_KINDS[layer.kind].needs_clock for layer in layers)
