"""Choosing the variant for one open, and resolving it into layers and a link.

Pure and synchronous: the recipient's data is already in `context`. Variants are tried
in order; the first whose `when` holds and whose every template resolves is chosen.
The trace says why each variant was or was not chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

from content_sources.http_data import SourceTrace
from renderers.fields import FieldError, Resources
from renderers.plan import Layer
from server.blocks import Block, LayerTemplate, VariantTemplate, is_http_url
from server.expressions import MissingValueError, Template


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
    """The link if a click may go there: http(s) to a host the block names literally."""
    host = _http_host(link)
    return link.strip() if host is not None and host in block.hosts else None


@lru_cache(maxsize=4096)
def _http_host(link: str) -> str | None:
    """The host of an http(s) link, None for anything else (kept: most opens of a
    block share a handful of links)."""
    if not link or not is_http_url(link):
        return None
    return (urlsplit(link.strip()).hostname or "").rstrip(".").lower()
