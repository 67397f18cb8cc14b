"""Jinja2's sandbox, bounded in time and size: what marketers' rules run in.

A value that is missing (an absent profile field, no such event, an unknown item) is a
`Missing` undefined: it can be passed through attribute access and `| default(...)`, but
printing it, testing it or comparing it raises `MissingValueError`. Output that would
print `None` or a blank counts as missing too.

Every evaluation that can loop or call has a time budget (`RULE_BUDGET_MS`, set by
`within_budget`): the generated code checks it on every loop iteration, every call (so
every macro call and recursion) and every item a filter such as `map` or `join` walks,
and an evaluation past it is missing. Operations that build one big value in a single
step (padding, `replace`, `join`, formatting, `+`, `~`) are bounded by size before or
right after they run, since no check can stop them half way.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from functools import update_wrapper
from string import Formatter
from time import monotonic, thread_time
from typing import Any, NoReturn, TypeVar

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum, missing

T = TypeVar("T")

MAX_OUTPUT_CHARS = 10_000
_MAX_PRODUCT_LEN = 10_000
# A real rule takes about 10 µs, and a loop over a few hundred of a recipient's items
# well under a millisecond, so 50 ms is thousands of times what an honest rule needs.
# It is also short: a variant whose rule runs away costs its open 50 ms before the next
# variant is tried, well within the 2 s a mail client waits for an image. It counts the
# CPU time of the thread evaluating, so that waiting for the CPU on a busy worker (other
# threads, the GIL) is not charged to the rule and cannot change which variant is shown.
RULE_BUDGET_MS = 50
_BUDGET_S = RULE_BUDGET_MS / 1000
# Bound on a value built in one step (a string, a list): a hundred times what a template
# may print, so a `when` can still search a joined list of a recipient's data, yet small
# enough to build in about a millisecond.
_MAX_SIZE = 1_000_000
_MAX_INT_BITS = 10_000  # about 3000 digits; Python will not even print beyond 4300
_MAX_FIELD_WIDTH = 1_000  # `%1000s`, `{:>1000}`, `center(1000)`: wider than any image
_MAX_LOREM_WORDS = 10_000
# Tuples rather than `X | Y` unions: isinstance with a tuple is several times faster, and
# these run on every call a rule makes.
_TEXT = (str, bytes)
_SEQUENCES = (str, bytes, list, tuple)
_COLLECTIONS = (list, dict, set)


class MissingValueError(Exception):
    """A template or expression touched a value the recipient's data does not have."""


class Missing(ChainableUndefined, StrictUndefined):
    """Undefined that chains through `a.b.c` and `| default`, but fails on any real use.

    Its message names the data in the marketer's words (`profile.first_name is missing`)
    rather than Jinja's (`'dict object' has no attribute 'first_name'`): the generated
    code passes each lookup's path along (`_PathCodeGenerator`).
    """

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._undefined_obj is missing:  # a top-level name the open does not have
            return f"{self._undefined_name} is missing"
        return str(super()._undefined_message)


def _finalize(value: object) -> object:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MissingValueError("a value printed as blank")
    if isinstance(value, Missing):
        raise MissingValueError(value._undefined_message)
    return value


class _Budget:
    """One evaluation's time budget.

    Checked against the cheap wall clock; only once that has run out is the thread's CPU
    time read, and if the thread was waiting rather than running, the wall deadline moves
    on by what is left.
    """

    __slots__ = ("cpu_deadline", "wall_deadline")

    def __init__(self) -> None:
        self.wall_deadline = monotonic() + _BUDGET_S
        self.cpu_deadline = thread_time() + _BUDGET_S

    def overdrawn(self) -> None:
        left = self.cpu_deadline - thread_time()
        if left <= 0:
            raise MissingValueError(f"the rule ran longer than its {RULE_BUDGET_MS} ms budget")
        self.wall_deadline = monotonic() + left


# Set by `holds()` and `render()` around an evaluation that can loop or call; a
# contextvar so that evaluations in threads and in event loop tasks each have their own.
_BUDGET: ContextVar[_Budget | None] = ContextVar("rule_budget", default=None)


def _spend() -> None:
    budget = _BUDGET.get()
    if budget is not None and monotonic() > budget.wall_deadline:
        budget.overdrawn()


def _metered(iterable: Any) -> Any:
    """`iterable`, checking the budget before each item, when an evaluation has one."""
    budget = _BUDGET.get()
    if budget is None or isinstance(iterable, Undefined):
        return iterable
    return _metered_items(iterable, budget)


def _metered_items(iterable: Iterable[Any], budget: _Budget) -> Iterator[Any]:
    for item in iterable:
        if monotonic() > budget.wall_deadline:
            budget.overdrawn()
        yield item


def _sized(value: Any) -> Any:
    if isinstance(value, _SEQUENCES) and len(value) > _MAX_SIZE:
        raise MissingValueError(f"a value grew past {_MAX_SIZE} items or characters")
    return value


def _too_wide(width: object) -> bool:
    return isinstance(width, int) and width > _MAX_FIELD_WIDTH


def _digits_too_wide(digits: str) -> bool:
    return len(digits) > 4 or int(digits) > _MAX_FIELD_WIDTH


# A printf conversion's width and precision: `%-10.2f`, `%*d`, `%(name)5s`.
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


def _check_printf(template: str) -> None:
    for width, precision in _PRINTF_FIELD.findall(template):
        for part in (width, precision):
            if part == "*" or (part and _digits_too_wide(part)):
                raise MissingValueError(f"a format field is wider than {_MAX_FIELD_WIDTH}")


def _check_format(template: str) -> None:
    """`str.format` fields: no width over the bound, and none taken from an argument
    (`{:{}}`), which could be anything."""
    for _, _, spec, _ in Formatter().parse(template):
        if spec and ("{" in spec or any(_digits_too_wide(n) for n in re.findall(r"\d+", spec))):
            raise MissingValueError(f"a format field is wider than {_MAX_FIELD_WIDTH}")


def _check_text_method(text: str | bytes, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Refuse a string method call whose result would be too big, before it is built.

    Returns the arguments to call with (a `join`'s items, gathered to be measured).
    """
    if name in ("center", "ljust", "rjust", "zfill") and _too_wide(args[0]):
        raise MissingValueError(f"cannot pad wider than {_MAX_FIELD_WIDTH}")
    if name == "expandtabs" and isinstance(args[0], int):
        tabs = text.count("\t") if isinstance(text, str) else text.count(b"\t")
        _sized_by(len(text) + tabs * args[0])
    if name == "replace" and len(args) >= 2 and isinstance(args[1], _TEXT):
        old: Any = args[0]
        count = text.count(old) if old else len(text) + 1
        new = args[1]
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        _sized_by(len(text) + count * len(new))
    if name == "translate" and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _sized_by(len(text) * longest)
    if name == "join":
        items = _gather(args[0], len(text))
        return (items, *args[1:])
    return args


def _sized_by(length: int) -> None:
    if length > _MAX_SIZE:
        raise MissingValueError(f"a value would grow past {_MAX_SIZE} characters")


def _gather(iterable: Iterable[Any], separator: int, *, stringify: bool = False) -> list[Any]:
    """The items to join (as strings if `stringify`), refused as soon as the joined text
    would be too long."""
    items: list[Any] = []
    length = -separator
    for item in _metered(iterable):
        piece = str(item) if stringify else item
        length += separator + (len(piece) if isinstance(piece, _TEXT) else len(str(piece)))
        if length > _MAX_SIZE:
            _sized_by(length)
        items.append(piece)
    return items


class _MeteredCodeGenerator(CodeGenerator):
    """Generated code that spends from the evaluation's budget on every loop iteration.

    A `{% for %}`'s iterable is wrapped in `environment.metered(...)`, so the check runs
    per item whether the body prints, recurses or is skipped by the loop's `if`; and
    `~` concatenations are bounded in size. Templates without loops get nothing added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not node.recursive:  # a recursive loop's every level is metered in `write`
            self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment.metered(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def write(self, x: str) -> None:
        # A recursive loop iterates, at its first level and at every `loop(children)`,
        # `reciter`, which the base class writes as this one bare word.
        super().write("environment.metered(reciter)" if x == "reciter" else x)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.sized(")
        super().visit_Concat(node, frame)
        self.write(")")

    # A lookup on data the rule names (`profile.first_name`, `inventory['sku-1'].stock`)
    # carries its path, so a missing value says which data it was (`Missing`). Other
    # lookups, and the async code this environment never generates, are Jinja's own.
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        path = data_path(node)
        if path is None or self.environment.is_async:
            super().visit_Getattr(node, frame)
            return
        self.write("environment.getattr_at(")
        self.visit(node.node, frame)
        self.write(f", {node.attr!r}, {path!r})")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        path = data_path(node)
        if path is None or self.environment.is_async or isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem_at(")
        self.visit(node.node, frame)
        self.write(", ")
        self.visit(node.arg, frame)
        self.write(f", {path!r})")


def data_path(node: nodes.Node) -> str | None:
    """How the rule names the data `node` reads, as the marketer wrote it
    (`profile.address.city`, `inventory['sku-1'].stock`, `events.last('purchase').props`),
    or None when it is not a lookup on a name (a filter's result, a literal)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = data_path(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        base = data_path(node.node)
        if base is None:
            return None
        if isinstance(node.arg, nodes.Const):
            return f"{base}[{node.arg.value!r}]"
        return f"{base}[{data_path(node.arg) or '…'}]"
    if isinstance(node, nodes.Call) and not (node.dyn_args or node.dyn_kwargs):
        callee = data_path(node.node)
        arguments = [*node.args, *(keyword.value for keyword in node.kwargs)]
        if callee is None or not all(isinstance(a, nodes.Const) for a in arguments):
            return None
        written = [repr(a.value) for a in node.args]  # type: ignore[attr-defined]
        written += [f"{k.key}={k.value.value!r}" for k in node.kwargs]  # type: ignore[attr-defined]
        return f"{callee}({', '.join(written)})"
    return None


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with operators, calls and filters bounded in size and time.

    `'x' * 10**9` or `'%999999999s' % x` cannot eat memory, and every call spends from
    the evaluation's time budget.
    """

    code_generator_class = _MeteredCodeGenerator
    intercepted_binops = frozenset(["*", "**", "%", "+"])

    # What the generated code calls as `environment.metered` and `environment.sized`.
    metered = staticmethod(_metered)
    sized = staticmethod(_sized)

    def handle_exception(self, source: str | None = None) -> NoReturn:
        """A rule's error at run time, raised without its traceback.

        Rules fail over on missing data all the time (a variant for readers with a first
        name, a reader without one), and the traceback Jinja2 rewrites for templates
        holds a made-up frame that holds the error: a reference cycle that kept each such
        open's objects (its frames, context, gathered data) alive until the cyclic
        collector's oldest generations ran, minutes later, and the process's memory grew
        meanwhile. Nothing reads a rule's traceback (the message says what was missing).
        A syntax error keeps Jinja2's handling: it names the template's line."""
        error = sys.exc_info()[1]
        if error is None or isinstance(error, TemplateSyntaxError):
            super().handle_exception(source)
        try:
            raise error.with_traceback(None)
        finally:
            # This frame would be in the error's new traceback, and it holds the error.
            error = None

    # `obj.attribute` and `obj[argument]` where the rule calls them `path`.
    def getattr_at(self, obj: Any, attribute: str, path: str) -> Any:
        return self._named_if_missing(self.getattr(obj, attribute), obj, attribute, path)

    def getitem_at(self, obj: Any, argument: Any, path: str) -> Any:
        return self._named_if_missing(self.getitem(obj, argument), obj, argument, path)

    def _named_if_missing(self, value: Any, obj: Any, key: Any, path: str) -> Any:
        """`value`, or when it is missing right here, an undefined that names `path`.

        One missing further up says where already, and a source's own hint ("no
        'purchase' event") is better than the path.
        """
        if (
            isinstance(value, Undefined)
            and value._undefined_hint is None
            and not isinstance(obj, Undefined)
        ):
            return self.undefined(f"{path} is missing", obj, key)
        return value

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise UndefinedError("exponent too large")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() * right > _MAX_INT_BITS:
                raise UndefinedError("power too large")
            return operator.pow(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                _check_printf(left)
                return _sized(operator.mod(left, right))
            return operator.mod(left, right)
        if operator_name == "+":
            return _sized(operator.add(left, right))
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, _SEQUENCES) and isinstance(count, int)
            if sized and len(seq) * count > _MAX_PRODUCT_LEN:
                raise UndefinedError("sequence product too large")
        ints = isinstance(left, int) and isinstance(right, int)
        if ints and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise UndefinedError("product too large")
        return operator.mul(left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _spend()
        owner = getattr(obj, "__self__", None)
        if args and isinstance(owner, _TEXT):
            args = _check_text_method(owner, getattr(obj, "__name__", ""), args)
        result = SandboxedEnvironment.call(self, context, obj, *args, **kwargs)
        if isinstance(owner, _COLLECTIONS) and len(owner) > _MAX_SIZE:
            raise MissingValueError(f"a collection grew past {_MAX_SIZE} items")
        return _sized(result) if isinstance(result, _TEXT) else result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatted = super().wrap_str_format(value)
        if formatted is None:
            return None
        template = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            _check_format(template)
            return str(_sized(formatted(*args, **kwargs)))

        return update_wrapper(bounded, formatted)


ENVIRONMENT = _BoundedSandbox(
    undefined=Missing,
    finalize=_finalize,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


def _bounded_filter(
    name: str, *, metered: bool = False, check: Callable[..., None] | None = None
) -> None:
    """Replace a built-in filter by one that walks its input within the budget
    (`metered`), refuses arguments that would build too much (`check`, called as the
    filter would be), and refuses a result that grew too big anyway."""
    original = ENVIRONMENT.filters[name]
    # Filters marked with @pass_context and the like take that argument first.
    skip = 0 if getattr(original, "jinja_pass_arg", None) is None else 1

    def bounded(*args: Any, **kwargs: Any) -> Any:
        if metered:
            args = (*args[:skip], _metered(args[skip]), *args[skip + 1 :])
        if check is not None:
            check(*args[skip:], **kwargs)
        return _sized(original(*args, **kwargs))

    ENVIRONMENT.filters[name] = update_wrapper(bounded, original)


# Each check takes the arguments the way its filter does, names included.
def _check_pad(value: object, width: object = 80, *_: object, **__: object) -> None:
    if isinstance(width, str):  # `indent` also takes the indentation itself
        width = len(width)
    if _too_wide(width):
        raise MissingValueError(f"cannot pad or indent wider than {_MAX_FIELD_WIDTH}")


def _check_replace(value: object, old: object, new: object, count: object = None) -> None:
    if isinstance(old, str) and isinstance(new, str):
        _check_text_method(str(value), "replace", (old, new, -1 if count is None else count))


def _check_wordwrap(
    value: object,
    width: object = 79,
    break_long_words: object = True,
    wrapstring: object = None,
    *_: object,
    **__: object,
) -> None:
    # At worst a break after every character.
    _sized_by(len(str(value)) * (1 + len(wrapstring if isinstance(wrapstring, str) else "\n")))


def _check_format_filter(value: object, *_: object, **__: object) -> None:
    _check_printf(str(value))


def _check_parts(value: object, *args: object, **kwargs: object) -> None:
    """`batch(linecount)` pads its last part to that many items; `slice(slices)` loops
    over that many parts."""
    count = args[0] if args else kwargs.get("linecount", kwargs.get("slices"))
    if isinstance(count, int) and count > _MAX_PRODUCT_LEN:
        raise MissingValueError(f"cannot split into more than {_MAX_PRODUCT_LEN} parts")


_MAX_JSON_INDENT = 16  # repeated at every level of every item: keep it to what reads well


def _check_json_indent(value: object, indent: object = None) -> None:
    if isinstance(indent, str):
        indent = len(indent)
    if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
        raise MissingValueError(f"a JSON indent is at most {_MAX_JSON_INDENT}")


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    # Without autoescaping, joining strings made once here is what the filter does anyway.
    items = _gather(value, len(str(d)), stringify=not eval_ctx.autoescape)
    return str(_sized(_JOIN(eval_ctx, items, d)))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n * max > _MAX_LOREM_WORDS:
        raise MissingValueError(f"lipsum makes at most {_MAX_LOREM_WORDS} words")
    return generate_lorem_ipsum(n, html, min, max)


# Filters that walk their whole input, in Python or in C.
ITERATING_FILTERS = frozenset(
    {
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "join",
        "sum",
        "sort",
        "unique",
        "batch",
        "slice",
        "groupby",
        "min",
        "max",
        "list",
    }
)
_JOIN = ENVIRONMENT.filters["join"]
ENVIRONMENT.filters["join"] = _join
for _name in sorted(ITERATING_FILTERS - {"join", "batch", "slice"}):
    _bounded_filter(_name, metered=True)
_bounded_filter("batch", metered=True, check=_check_parts)
_bounded_filter("slice", metered=True, check=_check_parts)
_bounded_filter("center", check=_check_pad)
_bounded_filter("indent", check=_check_pad)
_bounded_filter("replace", check=_check_replace)
_bounded_filter("wordwrap", check=_check_wordwrap)
_bounded_filter("format", check=_check_format_filter)
_bounded_filter("tojson", check=_check_json_indent)
# Filters whose output can be several times longer than their input (escaping, URL
# encoding): what they make stays within the size bound too.
for _name in ("escape", "e", "forceescape", "urlencode", "urlize", "xmlattr", "pprint"):
    _bounded_filter(_name)
ENVIRONMENT.globals["lipsum"] = _lipsum


def within_budget(evaluate: Callable[[], T]) -> T:
    """Run `evaluate` (marketer code) within a fresh time budget."""
    token = _BUDGET.set(_Budget())
    try:
        return evaluate()
    finally:
        _BUDGET.reset(token)
