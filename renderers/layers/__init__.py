"""The layer kinds, by the name a layer's "type" gives, and what their traits say of a plan.

Adding a kind is one module (its layer, fields and `LayerKind`) and one line in `_KINDS`;
`tests/contracts/test_layer_kinds.py` then says whether the kind keeps its promises.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from renderers.layers.barcode import BarcodeKind
from renderers.layers.base import Layer, LayerError, LayerKind
from renderers.layers.countdown import CountdownKind
from renderers.layers.fill import FillKind
from renderers.layers.image import ImageKind
from renderers.layers.progress import ProgressKind
from renderers.layers.qr import QrKind
from renderers.layers.rect import RectKind
from renderers.layers.text import TextKind

_KINDS: tuple[LayerKind[Any], ...] = (
    FillKind(),
    RectKind(),
    TextKind(),
    ImageKind(),
    CountdownKind(),
    ProgressKind(),
    QrKind(),
    BarcodeKind(),
)
LAYER_KINDS: dict[str, LayerKind[Any]] = {kind.name: kind for kind in _KINDS}
# The kinds that may animate a GIF, fixed here so the render loop asks only their layers.
ANIMATED_KINDS = frozenset(kind.name for kind in _KINDS if kind.animates)
_ENDING_KINDS = frozenset(kind.name for kind in _KINDS if kind.can_end)


def kind_named(name: object) -> LayerKind[Any]:
    """The kind a layer's "type" names; LayerError on "type" if there is none."""
    kind = LAYER_KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise LayerError("type", f"must be one of {', '.join(sorted(LAYER_KINDS))}")
    return kind


def needs_clock(layers: Iterable[Layer]) -> bool:
    """Whether any of `layers` is drawn from the plan's `now` (so its plan needs one)."""
    return any(LAYER_KINDS[layer.kind].needs_clock for layer in layers)


def has_ended(layers: Iterable[Layer], now: datetime) -> bool:
    """Whether what any of `layers` shows has run out at `now` (a countdown at zero)."""
    for layer in layers:
        if layer.kind in _ENDING_KINDS:
            kind = LAYER_KINDS[layer.kind]
            end = kind.ends_at(kind.own(layer), now)
            if end is not None and end <= now:
                return True
    return False


def frames(layer: Layer) -> int:
    """How many frames `layer` animates over in a GIF (1: it keeps still)."""
    if layer.kind not in ANIMATED_KINDS:
        return 1
    kind = LAYER_KINDS[layer.kind]
    return kind.frames(kind.own(layer))
