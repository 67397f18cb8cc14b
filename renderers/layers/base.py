"""What a layer kind is, and turning one raw layer object into a parsed layer.

A kind names its fields (typed parsers and defaults), builds its immutable layer value
from parsed fields, and draws that value onto a canvas at a given scale. It also declares
its traits, from which the registry (`renderers.layers`) answers questions about a plan
(does it need the clock, has it ended, does it animate) and the server decides which
layers may be drawn once for every open (`draws_inside_box`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from renderers.fields import Field, FieldError, Resources

if TYPE_CHECKING:
    from PIL import Image

    from renderers.animation import Timeline


T = TypeVar("T")


class Layer:
    """A parsed layer: an immutable value (a frozen dataclass) that its kind draws.

    Equal layers draw the same pixels, so plans of equal layers share a render.
    """

    __slots__ = ()
    kind: ClassVar[str]  # the name of its kind, as a layer's "type" gives it


L = TypeVar("L", bound=Layer)


class LayerError(ValueError):
    """A layer field is unknown, missing or unacceptable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FieldValues:
    """A layer's parsed fields, each read with its field's type: `values[BOX]` is a Box."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def __getitem__(self, spec: Field[T]) -> T:
        # The value under a field's name is what that field's parser (or default) made.
        return cast(T, self._values[spec.name])


class LayerKind(ABC, Generic[L]):
    """One kind of layer: "fill", "rect", "text", "image", "countdown", ...

    A kind is one module: its layer dataclass, its fields and this class, registered by
    one line in `renderers.layers`. Its traits have the defaults of a still layer that may
    draw anywhere; a kind says otherwise by overriding them.
    """

    layer_type: type[L]  # the dataclass this kind makes; its `kind` names the kind
    fields: tuple[Field[Any], ...]  # every accepted field except "type"
    # Drawn from the plan's `now` (a countdown): such a layer changes every second, so the
    # server gives its plan a `now` and never serves a pre-render of it.
    needs_clock: ClassVar[bool] = False
    # Every pixel it draws is inside its `box` field: layers that do not overlap then look
    # the same drawn in either order, which lets static layers be drawn first and cached.
    draws_inside_box: ClassVar[bool] = False
    # What it shows can run out (`ends_at`), and it may animate in a GIF (`frames`,
    # `timeline`): a countdown.
    can_end: ClassVar[bool] = False
    animates: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.layer_type.kind

    def make(self, values: Mapping[str, object]) -> Layer:
        """The layer for `values`: every field, parsed, defaults filled in.

        Raises FieldError when values that are each acceptable do not go together (a text
        with a character no font of its stack has, a QR code too large for its box).
        """
        return self.build(FieldValues(values))

    @abstractmethod
    def build(self, values: FieldValues) -> L:
        """The layer of `values` (see `make`)."""

    def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: datetime | None) -> None:
        """Draw `layer` (made by this kind) on the RGBA `canvas`, `scale` pixels per block pixel.

        `now` is the plan's (aware, the recipient's zone); only kinds that need the clock use it.
        """
        self.paint(canvas, self.own(layer), scale, now)

    @abstractmethod
    def paint(self, canvas: Image.Image, layer: L, scale: int, now: datetime | None) -> None:
        """Draw this kind's `layer` (see `draw`)."""

    def ends_at(self, layer: L, now: datetime) -> datetime | None:
        """When what `layer` shows runs out (a countdown's deadline), in `now`'s zone; None
        if never. The server serves a block's `expired` variant instead once it has."""
        return None

    def frames(self, layer: L) -> int:
        """How many one-second frames `layer` animates over in a GIF; 1: it keeps still."""
        return 1

    def timeline(self, canvas: Image.Image, layer: L, scale: int, now: datetime | None) -> Timeline:
        """`layer` laid out on `canvas` over its frames, for a kind whose `frames` can be more
        than 1."""
        raise TypeError(f"a {self.name} layer does not animate")

    def own(self, layer: Layer) -> L:
        """`layer` as this kind's; another kind's layer handed here is a bug in the caller."""
        if not isinstance(layer, self.layer_type):
            raise TypeError(f"expected a {self.layer_type.__name__}, got {type(layer).__name__}")
        return layer


@dataclass(frozen=True, slots=True)
class LayerFields:
    """One layer's fields as read before any open.

    `fixed` holds the parsed values (defaults filled in), `later` the templated strings an
    open resolves, `problems` every unknown, missing or unacceptable field, in the order
    of the kind's fields. `layer` is the layer made, when nothing was left for later and
    nothing is wrong.
    """

    fixed: dict[str, object]
    later: dict[str, tuple[Field[Any], str]]
    problems: tuple[LayerError, ...]
    layer: Layer | None


def read_layer(
    kind: LayerKind[Any],
    raw_fields: Mapping[str, object],
    resources: Resources,
    *,
    is_template: Callable[[str], bool] | None = None,
) -> LayerFields:
    """Check and parse one layer's fields (a "type" key is ignored), making the layer when
    every field is there and acceptable (which checks the fields together).

    With `is_template`, a string in a templated field that it says is a template, or that
    the field resolves at open time (`Field.at_open`: a remote image), is left for later;
    without it, every value is parsed now. A problem between fields is put on the field
    `make` names, else on the layer's first field.
    """
    problems = [
        LayerError(name, f"unknown field for a {kind.name} layer")
        for name in sorted(set(raw_fields) - {spec.name for spec in kind.fields} - {"type"})
    ]
    fixed: dict[str, object] = {}
    later: dict[str, tuple[Field[Any], str]] = {}
    for spec in kind.fields:
        if spec.name not in raw_fields:
            if spec.required:
                problems.append(LayerError(spec.name, "is required"))
            else:
                fixed[spec.name] = spec.default
            continue
        value = raw_fields[spec.name]
        try:
            text = _left_for_open(spec, value, is_template)
            if text is not None:
                later[spec.name] = (spec, text)
            else:
                fixed[spec.name] = spec.parse(value, resources)
        except FieldError as exc:
            problems.append(LayerError(spec.name, str(exc)))
    layer = None
    if not later and len(fixed) == len(kind.fields):  # every field parsed: check them together
        try:
            made = kind.make(fixed)
        except FieldError as exc:
            problems.append(LayerError(exc.field or kind.fields[0].name, str(exc)))
        else:
            layer = None if problems else made
    return LayerFields(fixed, later, tuple(problems), layer)


def _left_for_open(
    spec: Field[Any], value: object, is_template: Callable[[str], bool] | None
) -> str | None:
    """`value`, if it is text an open resolves; FieldError if it is a malformed one."""
    if is_template is None or not spec.templated or not isinstance(value, str):
        return None
    # A literal resolved at open time (an image URL, fetched then) is checked now.
    if (spec.at_open is not None and spec.at_open(value)) or is_template(value):
        return value
    return None


def parse_layer(
    kind: LayerKind[Any], raw_fields: Mapping[str, object], resources: Resources
) -> Layer:
    """The layer of `raw_fields`, every value parsed now (see `read_layer`).

    Raises LayerError naming the first unknown, missing or unacceptable field.
    """
    read = read_layer(kind, raw_fields, resources)
    if read.layer is None:  # nothing was left for later, so only a problem stopped it
        raise read.problems[0]
    return read.layer
