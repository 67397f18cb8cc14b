"""Blocks: validating a marketer's block definition and compiling it for open time.

Everything that can be checked without a recipient is checked here, at `PUT`: the
shape, every layer field, every expression and template. Problems are collected (not
just the first) and each names its field, e.g. `variants[1].layers[0].color`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from content_sources.expressions import (
    Expression,
    ExpressionError,
    Template,
    constant_subscripts,
    is_template,
)
from content_sources.http_data_spec import DataSourceError, HttpSourceSpec, parse_data_sources
from renderers.fields import Field, Resources
from renderers.layers import kind_named
from renderers.layers.base import LayerError, LayerKind, read_layer
from renderers.plan import DPRS, FORMATS, MAX_OUTPUT_PIXELS, MIN_MAX_BYTES, ImageFormat
from server.blocks.experiments import Split, parse_split
from server.blocks.polls import Poll, parse_poll

# Block pixels: the widest or tallest block (the contract's limit; a layer's box may reach
# past it, up to `renderers.fields.MAX_SIDE`).
MAX_BLOCK_SIDE = 2000
MAX_VARIANTS = 50
MAX_LAYERS = 50
BLOCK_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_URL_IN_TEXT = re.compile(r"https?://([A-Za-z0-9.-]+)", re.IGNORECASE)
_BLOCK_KEYS = {
    "width",
    "height",
    "format",
    "public",
    "tz",
    "variants",
    "default",
    "link_hosts",
    "description",
    "data",
    "split",
    "reopen",
    "max_bytes",
    "poll",
}
MAX_BUDGET_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class BlockError(ValueError):
    """The definition does not validate; `problems` name each bad field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class LayerTemplate:
    """A layer whose literal fields are parsed already and whose templated fields are not."""

    kind: LayerKind[Any]
    fixed: Mapping[str, object]
    templates: Mapping[str, tuple[Field[Any], Template]]


@dataclass(frozen=True, slots=True)
class VariantTemplate:
    name: str
    when: Expression | None
    layers: tuple[LayerTemplate, ...]
    link: Template | str


@dataclass(frozen=True, slots=True)
class Block:
    id: str
    version: int
    width: int
    height: int
    format: ImageFormat
    public: bool
    tz: str | None
    variants: tuple[VariantTemplate, ...]
    default: VariantTemplate
    hosts: frozenset[str]
    names: frozenset[str]
    skus: frozenset[str]
    definition: Mapping[str, Any] = field(compare=False, repr=False)
    data: Mapping[str, HttpSourceSpec] = field(default_factory=dict)
    split: Split | None = None
    sticky: bool = False
    max_bytes: int | None = None
    poll: Poll | None = None
    # Some `when` or template can loop (`Expression.may_run_long`): each still stops
    # within its time budget, but deciding the block is best done off the event loop.
    rules_may_run_long: bool = False


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))


def compile_block(
    block_id: str,
    definition: object,
    version: int,
    resources: Resources,
    *,
    secret_names: Collection[str] | None = None,
) -> Block:
    """Validate and compile a definition; raises BlockError naming every bad field.

    `secret_names` (given when a marketer stores a block) also checks that every secret
    its HTTP data sources read is configured here.
    """
    errors = _Collector()
    if not BLOCK_ID_PATTERN.match(block_id):
        errors.add(
            "id", "must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    if not isinstance(definition, dict):
        raise BlockError([*errors.problems, Problem("body", "must be a JSON object")])
    for key in sorted(set(definition) - _BLOCK_KEYS):
        errors.add(key, "unknown field")
    # The definition is stored and answered as it was sent, so a `null` would come back
    # as a value the field cannot hold. Leaving the field out is how to say "none"; the
    # other fields' own checks refuse `null` already.
    for key in ("tz", "split", "max_bytes", "poll"):
        if key in definition and definition[key] is None:
            errors.add(key, "must not be null: leave the field out")
    if not isinstance(definition.get("description", ""), str):
        errors.add("description", "must be a string")
    width = _int_field(definition, "width", errors)
    height = _int_field(definition, "height", errors)
    if width and height and width * height * max(DPRS) ** 2 > MAX_OUTPUT_PIXELS:
        errors.add("height", f"the block is too large to render at dpr={max(DPRS)}")
    fmt = definition.get("format", "png")
    if fmt not in FORMATS:
        errors.add("format", f"must be one of {', '.join(FORMATS)}")
    public = definition.get("public", False)
    if not isinstance(public, bool):
        errors.add("public", "must be true or false")
    tz = definition.get("tz")
    if tz is not None and not _valid_zone(tz):
        errors.add("tz", "must be an IANA time zone name, e.g. Europe/Warsaw")
    hosts = _literal_hosts(definition, errors)
    data: dict[str, HttpSourceSpec] = {}
    if "data" in definition:
        try:
            data = parse_data_sources(definition["data"], "data", secret_names=secret_names)
        except DataSourceError as exc:
            for field_path, message in exc.problems:
                errors.add(field_path, message)

    variants: list[VariantTemplate] = []
    raw_variants = definition.get("variants", [])
    if not isinstance(raw_variants, list) or len(raw_variants) > MAX_VARIANTS:
        errors.add("variants", f"must be a list of at most {MAX_VARIANTS} variants")
        raw_variants = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_variants):
        variant = _variant(raw, f"variants[{i}]", resources, errors, is_default=False)
        if variant is None:
            continue
        if variant.name in seen:
            errors.add(f"variants[{i}].name", f"duplicate variant name {variant.name!r}")
        seen.add(variant.name)
        variants.append(variant)
    if "default" not in definition:
        errors.add("default", "required: the variant served when no other applies")
        default = None
    else:
        default = _variant(definition["default"], "default", resources, errors, is_default=True)

    split, split_problems = parse_split(
        definition.get("split"), frozenset(v.name for v in variants)
    )
    for field_path, message in split_problems:
        errors.add(field_path, message)
    max_bytes = _whole(definition.get("max_bytes"))
    if max_bytes is not None and (
        isinstance(max_bytes, bool)
        or not isinstance(max_bytes, int)
        or not MIN_MAX_BYTES <= max_bytes <= MAX_BUDGET_BYTES
    ):
        errors.add("max_bytes", f"an integer from {MIN_MAX_BYTES} to {MAX_BUDGET_BYTES} (bytes)")
    poll = None
    if definition.get("poll") is not None:
        poll, poll_problems = parse_poll(definition["poll"])
        for field_path, message in poll_problems:
            errors.add(field_path, message)
    reopen = definition.get("reopen", "fresh")
    if reopen not in ("fresh", "sticky"):
        errors.add("reopen", "must be fresh (decide at every open) or sticky (keep the first)")
    if errors.problems or default is None:
        raise BlockError(errors.problems)
    sources = [*_all_sources(default), *(s for v in variants for s in _all_sources(v))]
    names: frozenset[str] = frozenset().union(
        *(s.names for s in sources),
        *(spec.names for spec in data.values()),
        {"last_shown"} if reopen == "sticky" else (),
        # A layer that shows the time (a countdown) counts from the open's `now`.
        {"now"} if _shows_time((*variants, default)) else (),
    )
    if "poll" in names and poll is None and "poll" not in definition:
        # Else every variant that shows the tally would silently never be served.
        errors.add("poll", "required: the variants read poll.*")
        raise BlockError(errors.problems)
    skus = frozenset().union(
        *(
            constant_subscripts(s.source, "inventory", expression=isinstance(s, Expression))
            for s in sources
        )
    )
    return Block(
        id=block_id,
        version=version,
        width=cast(int, width),
        height=cast(int, height),
        format=cast(ImageFormat, fmt),
        public=cast(bool, public),
        tz=cast(str | None, tz),
        variants=tuple(variants),
        default=default,
        hosts=hosts,
        names=names,
        skus=skus,
        definition=definition,
        data=data,
        split=split,
        sticky=reopen == "sticky",
        max_bytes=cast(int | None, max_bytes),
        poll=poll,
        rules_may_run_long=any(s.may_run_long for s in sources),
    )


def _shows_time(variants: Sequence[VariantTemplate]) -> bool:
    return any(layer.kind.needs_clock for variant in variants for layer in variant.layers)


def _all_sources(variant: VariantTemplate) -> Iterator[Expression | Template]:
    if variant.when is not None:
        yield variant.when
    if isinstance(variant.link, Template):
        yield variant.link
    for layer in variant.layers:
        yield from (template for _, template in layer.templates.values())


def _int_field(definition: Mapping[str, Any], name: str, errors: _Collector) -> int | None:
    value = _whole(definition.get(name))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BLOCK_SIDE:
        errors.add(name, f"required: an integer from 1 to {MAX_BLOCK_SIDE} (pixels)")
        return None
    return value


def _whole(value: object) -> object:
    """`value`, as an int if it is a whole number as JSON counts them (`600.0` is one)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _valid_zone(name: object) -> bool:
    from content_sources.clock import zone

    return isinstance(name, str) and zone(name) is not None


def _literal_hosts(definition: Mapping[str, Any], errors: _Collector) -> frozenset[str]:
    """Hosts a click may go to: those named literally anywhere in the definition."""
    hosts: set[str] = set()
    extra = definition.get("link_hosts", [])
    if not isinstance(extra, list) or not all(isinstance(h, str) and h for h in extra):
        errors.add("link_hosts", "must be a list of host names")
    else:
        hosts.update(h.lower() for h in extra)
    # A data source's API host is where atopen fetches from, not where a click may go.
    for text in _strings({k: v for k, v in definition.items() if k != "data"}):
        hosts.update(m.group(1).lower().rstrip(".") for m in _URL_IN_TEXT.finditer(text))
    return frozenset(hosts)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _variant(
    raw: object, path: str, resources: Resources, errors: _Collector, *, is_default: bool
) -> VariantTemplate | None:
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return None
    allowed = {"layers", "link"} | (set() if is_default else {"name", "when"})
    for key in sorted(set(raw) - allowed):
        errors.add(f"{path}.{key}", "unknown field")
    before = len(errors.problems)
    name = "default"
    when: Expression | None = None
    if not is_default:
        name = raw.get("name", "")
        if not isinstance(name, str) or not _VARIANT_NAME.match(name) or name == "default":
            errors.add(
                f"{path}.name", "required: 1-64 letters, digits, '_', '.' or '-', not 'default'"
            )
        when_source = raw.get("when")
        if when_source is not None:
            if not isinstance(when_source, str) or not when_source.strip():
                errors.add(f"{path}.when", "must be an expression string")
            else:
                try:
                    when = Expression(when_source)
                except ExpressionError as exc:
                    errors.add(f"{path}.when", str(exc))
    link = _link(raw.get("link"), f"{path}.link", errors, required=is_default)
    layers = _layers(raw.get("layers"), f"{path}.layers", resources, errors)
    if len(errors.problems) > before:
        return None
    return VariantTemplate(name=name, when=when, layers=layers, link=link)


def _link(raw: object, path: str, errors: _Collector, *, required: bool) -> Template | str:
    if raw is None and not required:
        return ""  # this variant's clicks go to the default's link
    if not isinstance(raw, str) or not raw.strip():
        errors.add(path, "required: an http(s) URL or a template of one")
        return ""
    if is_template(raw):
        try:
            return Template(raw)
        except ExpressionError as exc:
            errors.add(path, str(exc))
            return ""
    from server.blocks.selection import click_target  # selection builds on this module

    if not is_http_url(raw):
        errors.add(path, "must be an absolute http or https URL")
    elif click_target(raw.strip()) is None:
        # Clicks would silently go to the default's link: say so while the author looks.
        errors.add(
            path,
            "must be a link browsers read as written: no user name or password, "
            "backslash or control character",
        )
    return raw


def is_http_url(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _layers(
    raw: object, path: str, resources: Resources, errors: _Collector
) -> tuple[LayerTemplate, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        errors.add(path, f"required: a list of 1 to {MAX_LAYERS} layers")
        return ()
    layers: list[LayerTemplate] = []
    for i, layer in enumerate(raw):
        compiled = _layer(layer, f"{path}[{i}]", resources, errors)
        if compiled is not None:
            layers.append(compiled)
    return tuple(layers)


def _layer(
    raw: object, path: str, resources: Resources, errors: _Collector
) -> LayerTemplate | None:
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return None
    try:
        kind = kind_named(raw.get("type"))
    except LayerError as exc:
        errors.add(f"{path}.{exc.field}", exc.message)
        return None
    read = read_layer(kind, raw, resources, is_template=is_template)
    for problem in read.problems:
        errors.add(f"{path}.{problem.field}", problem.message)
    templates: dict[str, tuple[Field[Any], Template]] = {}
    for name, (spec, source) in read.later.items():
        try:
            templates[name] = (spec, Template(source))
        except ExpressionError as exc:
            errors.add(f"{path}.{name}", str(exc))
    return LayerTemplate(kind=kind, fixed=read.fixed, templates=templates)


def literal_format(ext: str) -> ImageFormat | None:
    """The image format a URL extension asks for (`jpeg` is accepted for `jpg`)."""
    normal = "jpg" if ext == "jpeg" else ext
    for fmt in FORMATS:
        if fmt == normal:
            return fmt
    return None
