"""Choosing the variant for one open, and resolving it into layers and a link.

Pure and synchronous: the recipient's data is already in `context`. Variants are tried
in order; the first whose `when` holds and whose every template resolves is chosen.
The trace says why each variant was or was not chosen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ada_url import SchemeType, idna_to_ascii, parse_url

from content_sources.expressions import MissingValueError, Template
from content_sources.http_data import SourceTrace
from renderers.fields import FieldError, Resources
from renderers.plan import Layer
from server.blocks.compiling import Block, LayerTemplate, VariantTemplate


class DefaultUnavailableError(Exception):
    """Even the default did not resolve (it needs no data, so this means bad data)."""


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    variant: str
    chosen: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"variant": self.variant, "chosen": self.chosen, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Choice:
    variant: str
    layers: tuple[Layer, ...]
    link: str
    trace: tuple[VariantOutcome, ...]
    data_trace: tuple[SourceTrace, ...] = ()
    # The open's time in the recipient's zone: what a countdown counts from.
    now: datetime | None = None


def choose_variant(
    block: Block,
    context: Mapping[str, object],
    resources: Resources,
    *,
    default_only: bool = False,
    excluded: frozenset[str] = frozenset(),
    keep: str | None = None,
    default_reason: str = "no other variant applied",
) -> Choice:
    """The first variant that applies and resolves, else the default.

    `excluded` variants are out of reach (another experiment arm); `keep` is a variant to
    serve again as long as it still resolves (a sticky block's first render).
    """
    trace: list[VariantOutcome] = []
    kept = next((v for v in block.variants if v.name == keep), None)
    if kept is not None and not default_only:
        try:
            layers, link = resolve_variant(block, kept, context, resources)
        except (MissingValueError, FieldError) as exc:
            trace.append(VariantOutcome(kept.name, False, f"kept variant now misses: {exc}"))
        else:
            trace.append(VariantOutcome(kept.name, True, "kept: first shown to this recipient"))
            return Choice(kept.name, layers, link, tuple(trace))
    for variant in () if default_only else block.variants:
        if variant.name in excluded:
            trace.append(VariantOutcome(variant.name, False, "another experiment arm"))
            continue
        try:
            if variant.when is not None and not variant.when.holds(context):
                trace.append(VariantOutcome(variant.name, False, "`when` is false"))
                continue
            layers, link = resolve_variant(block, variant, context, resources)
        except (MissingValueError, FieldError) as exc:
            trace.append(VariantOutcome(variant.name, False, f"missing value: {exc}"))
            continue
        trace.append(VariantOutcome(variant.name, True, "`when` holds and every value resolved"))
        return Choice(variant.name, layers, link, tuple(trace))
    try:
        layers, link = resolve_variant(block, block.default, context, resources)
    except (MissingValueError, FieldError) as exc:
        raise DefaultUnavailableError(str(exc)) from exc
    trace.append(VariantOutcome("default", True, default_reason))
    return Choice("default", layers, link, tuple(trace))


def resolve_variant(
    block: Block, variant: VariantTemplate, context: Mapping[str, object], resources: Resources
) -> tuple[tuple[Layer, ...], str]:
    layers = tuple(_resolve_layer(layer, context, resources) for layer in variant.layers)
    link = variant.link.render(context) if isinstance(variant.link, Template) else variant.link
    return layers, link.strip()


def _resolve_layer(
    layer: LayerTemplate, context: Mapping[str, object], resources: Resources
) -> Layer:
    values = dict(layer.fixed)
    for name, (spec, template) in layer.templates.items():
        values[name] = spec.parse(template.render(context), resources)
    return layer.kind.make(values)


def safe_link(block: Block, link: str) -> str | None:
    """Where a click may go: the link as a browser reads it (its WHATWG `href`), if that
    is http(s) to a host the block names; None for anything else."""
    target = click_target(link)
    if target is None:
        return None
    href, host = target
    return href if host in block.hosts or host in _browser_hosts(block.hosts) else None


@lru_cache(maxsize=4096)
def click_target(link: str) -> tuple[str, str] | None:
    """The `href` and host a browser would visit for `link`, None if it is not a plain
    http(s) URL (kept: most opens of a block share a handful of links).

    The host is read with the WHATWG URL parser browsers use, not `urlsplit`: the two
    disagree on links such as `https://evil.example\\@shop.example.com/`, where a
    browser visits evil.example. A trailing dot is dropped from the host: `example.com.`
    names the same DNS host as `example.com`.
    """
    # Browsers read `\\` as `/` in http(s) URLs and silently drop tabs and newlines, so
    # text containing them does not mean what it shows; a link that needs them is not
    # one a marketer meant to compute.
    if _UNCLEAR.search(link):
        return None
    try:
        parts = parse_url(link.strip(), _PARTS)
    except ValueError:  # not a URL at all, or text that is not valid Unicode
        return None
    # Credentials in a link only serve to disguise its host (`https://shop.example.com@
    # evil.example/`); shops do not put them in emails.
    if parts["scheme_type"] not in _HTTP or parts["username"] or parts["password"]:
        return None
    href = parts["href"]
    # The href goes into `Location` verbatim; WHATWG serialisation percent-encodes
    # everything outside printable ASCII, and this keeps it so if the parser ever differs.
    if not _HEADER_SAFE.fullmatch(href):
        return None
    return href, parts["hostname"].removesuffix(".")


@lru_cache(maxsize=1024)
def _browser_hosts(hosts: frozenset[str]) -> frozenset[str]:
    """A block's hosts as the parser spells them (`shöp.example` is `xn--shp-tna.example`,
    full-width letters are ASCII), so a host listed in Unicode matches its links."""
    spelled: set[str] = set()
    for host in hosts:
        try:
            ascii_host = idna_to_ascii(host).decode("ascii").removesuffix(".")
        except UnicodeError:  # not encodable: no link can have it as its host
            continue
        if ascii_host:  # empty when the name is not a valid domain
            spelled.add(ascii_host)
    return frozenset(spelled)


_PARTS = ("href", "username", "password", "hostname", "scheme_type")
_HTTP = (SchemeType.HTTP, SchemeType.HTTPS)
# A backslash or any ASCII control character (C0, DEL) anywhere in the link.
_UNCLEAR = re.compile(r"[\\\x00-\x1f\x7f]")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
