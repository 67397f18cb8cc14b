"""The rule language: `when` expressions and string templates in sandboxed Jinja2.

Marketers' text runs on every open, so it runs in Jinja2's sandbox with a few more
bounds (no huge string or list products, capped output). A value that is missing (an
absent profile field, no such event, an unknown item) is a `Missing` undefined: it can
be passed through attribute access and `| default(...)`, but printing it, testing it
or comparing it raises `MissingValueError`, which makes the variant fall through to the
next one. Output that would print `None` or a blank counts as missing too: a recipient
never sees an empty name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT_CHARS = 10_000
_MAX_PRODUCT_LEN = 10_000


class MissingValueError(Exception):
    """A template or expression touched a value the recipient's data does not have."""


class ExpressionError(ValueError):
    """An expression or template does not compile; the message says where and why."""


class Missing(ChainableUndefined, StrictUndefined):
    """Undefined that chains through `a.b.c` and `| default`, but fails on any real use."""

    __slots__ = ()


def _finalize(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MissingValueError("a value printed as blank")
    if isinstance(value, Missing):
        raise MissingValueError(value._undefined_message)
    return value


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with `*` and `**` bounded so `'x' * 10**9` cannot eat memory."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise UndefinedError("exponent too large")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if sized and len(seq) * count > _MAX_PRODUCT_LEN:
                raise UndefinedError("sequence product too large")
        return operator.mul(left, right)


ENVIRONMENT = _BoundedSandbox(
    undefined=Missing,
    finalize=_finalize,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)

_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(text: str) -> bool:
    """Only strings with Jinja markup are templates; plain strings are taken literally."""
    return any(marker in text for marker in _TEMPLATE_MARKERS)


class Expression:
    """A compiled `when` expression; true, false, or missing."""

    __slots__ = ("_compiled", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
            ast = ENVIRONMENT.parse("{{ " + source + " }}")
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"does not compile: {exc.message}") from None
        self.names = _names_used(ast)

    def holds(self, context: Mapping[str, object]) -> bool:
        """Evaluate to a bool; raises MissingValueError when the answer needs missing data."""
        return bool(_guard(lambda: bool(self._compiled(**context))))


class Template:
    """A compiled string template whose output is never blank."""

    __slots__ = ("_template", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            ast = ENVIRONMENT.parse(source)
            self._template = ENVIRONMENT.from_string(ast)
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"does not compile: {exc.message} (line {exc.lineno})") from None
        self.names = _names_used(ast)

    def render(self, context: Mapping[str, object]) -> str:
        text = str(_guard(lambda: self._template.render(context)))
        if not text.strip():
            raise MissingValueError("rendered blank")
        if len(text) > MAX_OUTPUT_CHARS:
            raise MissingValueError(f"rendered more than {MAX_OUTPUT_CHARS} characters")
        return text


def _guard(evaluate: Callable[[], object]) -> object:
    """Turn every failure of marketer code into MissingValueError: never an error image."""
    try:
        return evaluate()
    except MissingValueError:
        raise
    except UndefinedError as exc:
        raise MissingValueError(exc.message or "undefined value") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise MissingValueError(f"{type(exc).__name__}: {exc}") from None


def _names_used(ast: nodes.Template) -> frozenset[str]:
    """Top-level names a template reads, so an open fetches only what the block uses."""
    return frozenset(meta.find_undeclared_variables(ast))


def constant_subscripts(source: str, name: str, *, expression: bool = False) -> frozenset[str]:
    """Constant keys used with `name`, e.g. `inventory["sku-1"]` or `inventory.sku1`.

    Lets the open fetch those items in its single store round trip.
    """
    ast = ENVIRONMENT.parse("{{ " + source + " }}" if expression else source)
    keys: set[str] = set()
    for node in ast.find_all((nodes.Getitem, nodes.Getattr)):
        if not isinstance(node, nodes.Getitem | nodes.Getattr):
            continue
        if not (isinstance(node.node, nodes.Name) and node.node.name == name):
            continue
        if isinstance(node, nodes.Getattr):
            keys.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.add(node.arg.value)
    # `name.method(["a", "b"], ...)`: the literal list's keys too (inventory.first_available).
    for call in ast.find_all(nodes.Call):
        target = call.node
        on_name = isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name)
        if not on_name or target.node.name != name:  # type: ignore[attr-defined]
            continue
        if call.args and isinstance(call.args[0], nodes.List):
            keys.update(
                item.value
                for item in call.args[0].items
                if isinstance(item, nodes.Const) and isinstance(item.value, str)
            )
    keys.discard("first_available")
    return frozenset(keys)
