"""Which layers of a variant can be drawn once for every open, and the order that allows.

A layer with nothing to resolve and no clock looks the same at every open. The render
draws a plan's leading run of such layers once per process and copies it (its static
prefix), and a PNG then compresses again only the rows the other layers changed. A
static layer above a templated one (a fixed price or button over a photo, under a
personalized headline elsewhere) can join that run when it shares no pixel with any
layer it would move below: layers that do not overlap look the same drawn in either
order. Which layers stay inside their box, their kind says (`LayerKind.draws_inside_box`);
any other (a fill) is taken to cover everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from renderers.fields import BOX, Box
from server.blocks.compiling import LayerTemplate, VariantTemplate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LayerOrder:
    """The order to draw a variant's layers in: `order` holds their indices, and the
    first `static` of them are the same at every open."""

    order: tuple[int, ...]
    static: int

    def arrange(self, layers: Sequence[T]) -> tuple[T, ...]:
        """`layers` (the variant's, resolved, in the block's order) in drawing order."""
        return tuple(layers[index] for index in self.order)


def layer_order(variant: VariantTemplate) -> LayerOrder:
    """The static layers first (those that can move there), then the rest, each group in
    the block's order."""
    static: list[int] = []
    rest: list[int] = []
    for index, layer in enumerate(variant.layers):
        fixed = not layer.templates and not layer.kind.needs_clock
        if fixed and not any(_overlap(layer, variant.layers[below]) for below in rest):
            static.append(index)
        else:
            rest.append(index)
    return LayerOrder((*static, *rest), len(static))


def _overlap(one: LayerTemplate, other: LayerTemplate) -> bool:
    first, second = _box(one), _box(other)
    if first is None or second is None:  # it may draw anywhere
        return True
    x1, y1, w1, h1 = first
    x2, y2, w2, h2 = second
    return x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1


def _box(layer: LayerTemplate) -> Box | None:
    """Where `layer` draws, if its kind keeps it to its box (never templated: fixed here)."""
    if not layer.kind.draws_inside_box:
        return None
    box = layer.fixed.get(BOX.name)
    return box if isinstance(box, tuple) else None
