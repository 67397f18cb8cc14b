"""The layer kinds, by the name a layer's "type" gives."""

from renderers.layers.base import LayerKind
from renderers.layers.fill import FillKind
from renderers.layers.image import ImageKind
from renderers.layers.rect import RectKind
from renderers.layers.text import TextKind

LAYER_KINDS: dict[str, LayerKind] = {
    "fill": FillKind(),
    "rect": RectKind(),
    "text": TextKind(),
    "image": ImageKind(),
}
