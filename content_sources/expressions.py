"""The rule language: `when` expressions and string templates in sandboxed Jinja2.

Marketers' text runs on every open, so it runs in a sandbox bounded in time and size
(`content_sources/rule_sandbox.py`). A rule that touches a missing value, runs past its time
budget or would build too big a value raises `MissingValueError`, which makes the
variant fall through to the next one: a recipient never sees an empty name, and a rule
cannot stall a worker. Output is capped at `MAX_OUTPUT_CHARS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes

from content_sources.rule_sandbox import (
    ENVIRONMENT,
    ITERATING_FILTERS,
    MAX_OUTPUT_CHARS,
    Missing,
    MissingValueError,
    within_budget,
)

__all__ = [
    "MAX_OUTPUT_CHARS",
    "Expression",
    "ExpressionError",
    "Missing",
    "MissingValueError",
    "Template",
    "constant_subscripts",
    "is_template",
]


class ExpressionError(ValueError):
    """An expression or template does not compile; the message says where and why."""


_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(text: str) -> bool:
    """Only strings with Jinja markup are templates; plain strings are taken literally."""
    return any(marker in text for marker in _TEMPLATE_MARKERS)


class Expression:
    """A compiled `when` expression; true, false, or missing.

    `may_run_long` says whether it can loop (see `_may_run_long`): it still stops within
    the budget, but the caller may prefer to run it off the event loop.
    """

    __slots__ = ("_budgeted", "_compiled", "may_run_long", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._compiled = ENVIRONMENT.compile_expression(source, undefined_to_none=False)
            ast = ENVIRONMENT.parse("{{ " + source + " }}")
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"does not compile: {exc.message}") from None
        self.names = _names_used(ast)
        self.may_run_long = _may_run_long(ast)
        self._budgeted = self.may_run_long or ast.find(nodes.Call) is not None

    def holds(self, context: Mapping[str, object]) -> bool:
        """Evaluate to a bool; raises MissingValueError when the answer needs missing data."""
        return bool(_evaluate(lambda: bool(self._compiled(**context)), self._budgeted))


class Template:
    """A compiled string template whose output is never blank (see `Expression`)."""

    __slots__ = ("_budgeted", "_template", "may_run_long", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            ast = ENVIRONMENT.parse(source)
            self._template = ENVIRONMENT.from_string(ast)
        except TemplateSyntaxError as exc:
            raise ExpressionError(f"does not compile: {exc.message} (line {exc.lineno})") from None
        self.names = _names_used(ast)
        self.may_run_long = _may_run_long(ast)
        self._budgeted = self.may_run_long or ast.find(nodes.Call) is not None

    def render(self, context: Mapping[str, object]) -> str:
        render = self._streamed if self.may_run_long else self._template.render
        text = str(_evaluate(lambda: render(context), self._budgeted))
        if not text.strip():
            raise MissingValueError("rendered blank")
        if len(text) > MAX_OUTPUT_CHARS:
            raise MissingValueError(f"rendered more than {MAX_OUTPUT_CHARS} characters")
        return text

    def _streamed(self, context: Mapping[str, object]) -> str:
        """The output of a template that loops, given up as soon as it is too long rather
        than once it is all built."""
        pieces: list[str] = []
        length = 0
        for piece in self._template.root_render_func(self._template.new_context(dict(context))):
            length += len(piece)
            if length > MAX_OUTPUT_CHARS:
                raise MissingValueError(f"rendered more than {MAX_OUTPUT_CHARS} characters")
            pieces.append(piece)
        return "".join(pieces)


def _evaluate(evaluate: Callable[[], object], budgeted: bool) -> object:
    """Run marketer code, within a fresh time budget when it can loop or call."""
    if not budgeted:
        return _guard(evaluate)
    return within_budget(lambda: _guard(evaluate))


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
    except RecursionError:
        raise MissingValueError("a macro or loop called itself too deeply") from None


_ITERATING_GLOBALS = frozenset({"range", "lipsum"})
_ITERATING_METHODS = frozenset({"format", "format_map", "join"})


def _may_run_long(ast: nodes.Template) -> bool:
    """Whether the code can loop: `for`, macros and call blocks, `range(...)`, a filter
    that walks something other than a literal, or string formatting."""
    if any(ast.find_all((nodes.For, nodes.Macro, nodes.CallBlock))):
        return True
    for call in ast.find_all(nodes.Call):
        callee = call.node
        if isinstance(callee, nodes.Name) and callee.name in _ITERATING_GLOBALS:
            return True
        if isinstance(callee, nodes.Getattr) and callee.attr in _ITERATING_METHODS:
            return True
    for node in ast.find_all(nodes.Filter):
        if node.name == "format":
            return True
        if node.name in ITERATING_FILTERS and not _is_literal(node.node):
            return True
    return any(
        isinstance(mod.left, nodes.Const) and isinstance(mod.left.value, str)
        for mod in ast.find_all(nodes.Mod)
    )


def _is_literal(node: nodes.Node | None) -> bool:
    if isinstance(node, nodes.Const | nodes.TemplateData):
        return True
    if isinstance(node, nodes.List | nodes.Tuple):
        return all(_is_literal(item) for item in node.items)
    if isinstance(node, nodes.Dict):
        return all(_is_literal(pair.key) and _is_literal(pair.value) for pair in node.items)
    return False


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
