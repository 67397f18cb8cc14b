"""Layer fields: how each value a marketer writes in a layer is checked and converted.

A layer kind lists its fields; each field has a parser that turns the raw JSON value
(after the server has resolved any template in it) into the immutable value the layer
stores, or raises FieldError saying what is wrong with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar, overload
from urllib.parse import urlsplit

from PIL import ImageColor

if TYPE_CHECKING:
    from renderers.fonts import FontStack
    from renderers.resources import Asset

Box = tuple[int, int, int, int]  # x, y, w, h in block pixels
RGBA = tuple[int, int, int, int]

T = TypeVar("T")
Word = TypeVar("Word", bound=str)

# Block pixels: the most a box (or a plan) may measure or reach, the bound on the work one
# layer can cause. A box may reach past the image (a photo cropped by the block's edge)
# and is clipped to it, so this is twice the largest block a marketer may define
# (`server.blocks.compiling.MAX_BLOCK_SIDE`, the contract's limit).
MAX_SIDE = 4000
# Block pixels: a rounded corner larger than half the box is drawn as half the box.
MAX_RADIUS = 2000
MAX_URL_CHARS = 2048


class FieldError(ValueError):
    """A layer field value is not acceptable.

    The message says why, without the field name: the caller prefixes the path, e.g.
    'variants[0].layers[1].color: not a colour: "#zz"'. A layer kind's `make` names the
    field in `field` when values do not go together (a text its fonts cannot draw).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Resources(Protocol):
    """Where named fonts and image assets come from (the server supplies one)."""

    def font(self, name: str) -> FontStack:
        """The stack for `name` (font names, comma-separated); FieldError if unknown."""
        ...

    def asset(self, name: str) -> Asset:
        """The decoded image `name` (an asset file or an https URL); FieldError if unusable."""
        ...


Parser = Callable[[object, Resources], T]


class _Missing:
    """The default of a field that has none: it is required."""


_REQUIRED: Final = _Missing()


@dataclass(frozen=True, slots=True, init=False)
class Field(Generic[T]):
    """One accepted layer field: its name, parser and default (a field without one is required).

    `T` is what the parser makes (with None when that is the default), so a layer kind
    reads each parsed value with its type (`FieldValues[field]`).
    """

    name: str
    parse: Parser[T]
    required: bool
    default: T | None  # used when absent and not required, in parsed form
    templated: bool  # string values may be Jinja templates the server resolves first
    # Literal values this returns True for are resolved at open time like templates
    # (remote image URLs); it raises FieldError for such a value that is malformed.
    at_open: Callable[[object], bool] | None

    @overload
    def __init__(
        self,
        name: str,
        parse: Parser[T],
        *,
        templated: bool = True,
        at_open: Callable[[object], bool] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        parse: Parser[T],
        *,
        default: T,
        templated: bool = True,
        at_open: Callable[[object], bool] | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        parse: Parser[T],
        *,
        default: T | _Missing = _REQUIRED,
        templated: bool = True,
        at_open: Callable[[object], bool] | None = None,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "parse", parse)
        object.__setattr__(self, "required", isinstance(default, _Missing))
        object.__setattr__(self, "default", None if isinstance(default, _Missing) else default)
        object.__setattr__(self, "templated", templated)
        object.__setattr__(self, "at_open", at_open)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"not a string: {value!r}")
    return value.strip()


def _whole_number(value: object) -> int:
    # JSON has one number type, so 12.0 is as good as 12; True is not a number here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"not a whole number: {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise FieldError(f"not a whole number: {value!r}")
        return int(value)
    return value


def color(value: object, resources: Resources) -> RGBA:
    """`#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`, a CSS colour name or `rgb()`/`hsl()` forms."""
    spec = _string(value)
    if spec.lower() == "transparent":
        return (0, 0, 0, 0)
    try:
        parsed = ImageColor.getcolor(spec, "RGBA")
    except ValueError:
        raise FieldError(f'not a colour: "{spec}"') from None
    if not isinstance(parsed, tuple) or len(parsed) != 4:
        raise FieldError(f'not a colour: "{spec}"')
    r, g, b, a = parsed
    return (r, g, b, a)


def box(value: object, resources: Resources) -> Box:
    """`[x, y, w, h]` in block pixels; w and h at least 1."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise FieldError("must be a list [x, y, width, height]")
    x, y, w, h = (_whole_number(v) for v in value)
    if not (-MAX_SIDE <= x <= MAX_SIDE and -MAX_SIDE <= y <= MAX_SIDE):
        raise FieldError(f"x and y must be between {-MAX_SIDE} and {MAX_SIDE}")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise FieldError(f"width and height must be between 1 and {MAX_SIDE}")
    return (x, y, w, h)


def int_range(lo: int, hi: int) -> Callable[[object, Resources], int]:
    """A parser for whole numbers from `lo` to `hi` inclusive."""

    def parse(value: object, resources: Resources) -> int:
        number = _whole_number(value)
        if not lo <= number <= hi:
            raise FieldError(f"must be between {lo} and {hi}")
        return number

    return parse


def number_range(lo: float, hi: float) -> Callable[[object, Resources], float]:
    """A parser for numbers from `lo` to `hi` inclusive."""

    def parse(value: object, resources: Resources) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(f"not a number: {value!r}")
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise FieldError(f"must be between {lo:g} and {hi:g}")
        return number

    return parse


def choice(*options: Word) -> Callable[[object, Resources], Word]:
    """A parser for one of a fixed set of words (typed as they are: a `Literal`'s values)."""

    def parse(value: object, resources: Resources) -> Word:
        word = _string(value)
        for option in options:
            if option == word:
                return option
        raise FieldError(f"must be one of: {', '.join(options)}")

    return parse


def text(value: object, resources: Resources) -> str:
    """A non-blank string, stripped; a blank must never be drawn."""
    content = _string(value)
    if not content:
        raise FieldError("is empty")
    return content


def font(value: object, resources: Resources) -> FontStack:
    """A font name, or several separated by commas (a stack), looked up in the resources."""
    return resources.font(_string(value))


def asset(value: object, resources: Resources) -> Asset:
    """An asset name (a file in an assets directory) or an https URL, from the resources."""
    return resources.asset(_string(value))


def number(value: object, resources: Resources) -> float:
    """A finite number: from JSON, or the text a template made of one (`"1200"`, `"3.5"`)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(f"not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(f"not a number: {value!r}")
    return float(value)


def is_remote(name: str) -> bool:
    """Whether an image `src` names a URL (fetched at open time) rather than an asset file."""
    return name.strip().lower().startswith(("https://", "http://"))


def remote_url(name: str) -> str:
    """`name` as a URL atopen may fetch: https, a host name, no credentials; else FieldError."""
    url = name.strip()
    if len(url) > MAX_URL_CHARS:
        raise FieldError(f"a remote image URL must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FieldError(f'not a URL: "{url}"') from None
    if parts.scheme.lower() != "https":
        raise FieldError(f'a remote image must be an https URL: "{url}"')
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise FieldError(f'a remote image URL needs a host name and no credentials: "{url}"')
    if port == 0 or any(char.isspace() for char in url):
        raise FieldError(f'not a URL: "{url}"')
    return url


def fetched_at_open(value: object) -> bool:
    """For `Field.at_open` of image sources: a URL is fetched at open time (checked here)."""
    if isinstance(value, str) and is_remote(value):
        remote_url(value)
        return True
    return False


# Fields that several kinds share, alike in each.
BOX: Field[Box] = Field("box", box, templated=False)
RADIUS: Field[int] = Field("radius", int_range(0, MAX_RADIUS), default=0, templated=False)
