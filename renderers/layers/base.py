"""What a layer kind is, and turning one raw layer object into a parsed layer.

A kind names its fields (with parsers and defaults), builds its immutable layer value
from parsed fields, and draws that value onto a canvas at a given scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from renderers.fields import Field, FieldError, Resources

if TYPE_CHECKING:
    from PIL import Image

    from renderers.plan import Layer


T = TypeVar("T")


class LayerError(ValueError):
    """A layer field is unknown, missing or unacceptable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class LayerKind(Protocol):
    """One kind of layer: "fill", "rect", "text", "image", "countdown", ..."""

    name: str
    fields: tuple[Field, ...]  # every accepted field except "type"
    # Drawn from the plan's `now` (a countdown): such a layer changes every second, so the
    # server gives its plan a `now` and never serves a pre-render of it.
    needs_clock: bool

    def make(self, values: Mapping[str, object]) -> Layer:
        """The layer for `values`: every field, parsed, defaults filled in.

        Raises FieldError when values that are each acceptable do not go together (a text
        with a character no font of its stack has, a QR code too large for its box).
        """
        ...

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        """Draw `layer` (made by this kind) on the RGBA `canvas`, `scale` pixels per block pixel.

        `now` is the plan's (aware, the recipient's zone); only kinds that need the clock use it.
        """
        ...


def parse_layer(kind: LayerKind, raw_fields: Mapping[str, object], resources: Resources) -> Layer:
    """Check and parse one layer's fields (a "type" key is ignored) and make the layer.

    Raises LayerError naming the first unknown, missing or unacceptable field (a problem
    between fields is put on the field `make` says, else on the layer's first field).
    """
    known = {spec.name for spec in kind.fields}
    unknown = sorted(set(raw_fields) - known - {"type"})
    if unknown:
        raise LayerError(unknown[0], f"unknown field for a {kind.name} layer")
    values: dict[str, object] = {}
    for spec in kind.fields:
        if spec.name not in raw_fields:
            if spec.required:
                raise LayerError(spec.name, "is required")
            values[spec.name] = spec.default
            continue
        try:
            values[spec.name] = spec.parse(raw_fields[spec.name], resources)
        except FieldError as exc:
            raise LayerError(spec.name, str(exc)) from None
    try:
        return kind.make(values)
    except FieldError as exc:
        raise LayerError(exc.field or kind.fields[0].name, str(exc)) from None


def expect(layer: object, layer_type: type[T]) -> T:
    """`layer` as `layer_type`; a kind handed another kind's layer is a bug in the caller."""
    if not isinstance(layer, layer_type):
        raise TypeError(f"expected a {layer_type.__name__}, got {type(layer).__name__}")
    return layer
