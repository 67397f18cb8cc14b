"""The rule language: what counts as missing, the sandbox, and its bounds."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from content_sources.expressions import (
    Expression,
    ExpressionError,
    MissingValueError,
    Template,
    constant_subscripts,
    is_template,
)
from renderers.resources import LocalResources, builtin_fonts
from server.blocks.compiling import compile_block
from server.blocks.selection import choose_variant

CONTEXT = {
    "profile": {"first_name": "Ann", "points": 120, "empty": "", "address": {"city": "Łódź"}}
}


def test_template_resolves_present_values() -> None:
    assert (
        Template("Hi {{ profile.first_name }} from {{ profile.address.city }}").render(CONTEXT)
        == "Hi Ann from Łódź"
    )


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ profile.last_name }}",
        "Hi {{ profile.address.street.number }}",
        "Hi {{ profile.empty }}",
        "{{ profile.first_name if false else none }}",
        "{{ '   ' }}",
        "{{ profile.missing ~ '' }}",
    ],
)
def test_missing_or_blank_values_never_render(source: str) -> None:
    with pytest.raises(MissingValueError):
        Template(source).render(CONTEXT)


def test_default_filter_supplies_a_fallback_through_chains() -> None:
    assert Template("Hi {{ profile.nick | default('there') }}").render(CONTEXT) == "Hi there"
    assert Template("{{ profile.a.b.c | default('x') }}").render(CONTEXT) == "x"
    assert (
        Template("{% if profile.nick is defined %}A{% else %}B{% endif %}").render(CONTEXT) == "B"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("profile.points > 100", True),
        ("profile.points > 500", False),
        ("'Ann' in profile.first_name", True),
    ],
)
def test_expressions_evaluate(source: str, expected: bool) -> None:
    assert Expression(source).holds(CONTEXT) is expected


@pytest.mark.parametrize(
    "source", ["profile.vip", "not profile.vip", "profile.vip > 3", "profile.vip == 1"]
)
def test_expression_on_a_missing_value_is_missing_not_false(source: str) -> None:
    with pytest.raises(MissingValueError):
        Expression(source).holds(CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ profile.__class__ }}",
        "{{ profile.first_name.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ 'x' * 100000 }}",
        "{{ [1] * 100000 }}",
        "{{ 10 ** 1000 }}",
        "{{ 1 / 0 }}",
        "{{ profile.first_name + 1 }}",
    ],
)
def test_sandbox_and_bounds_turn_abuse_into_missing(source: str) -> None:
    with pytest.raises(MissingValueError):
        Template(source).render(CONTEXT)


def test_output_is_capped() -> None:
    with pytest.raises(MissingValueError):
        Template("{% for i in range(5000) %}abc{% endfor %}").render(CONTEXT)


@pytest.mark.parametrize("source", ["profile.(", "1 +", "events.within('x'"])
def test_bad_expressions_do_not_compile(source: str) -> None:
    with pytest.raises(ExpressionError, match="does not compile"):
        Expression(source)


def test_bad_templates_do_not_compile() -> None:
    with pytest.raises(ExpressionError, match="line 1"):
        Template("Hi {{ profile.first_name ")
    with pytest.raises(ExpressionError):
        Template("{% if %}")


def test_names_used_are_known_before_any_open() -> None:
    assert Expression("events.within('a', hours=2) and inventory['s1'].stock > 0").names == {
        "events",
        "inventory",
    }
    assert Template("{% set x = 1 %}{{ x }} {{ profile.a }}").names == {"profile"}


def test_constant_skus_are_found_for_the_single_round_trip() -> None:
    expression = "inventory['s1'].stock > inventory.s2.stock"
    assert constant_subscripts(expression, "inventory", expression=True) == {
        "s1",
        "s2",
    }
    assert constant_subscripts("{{ inventory[profile.sku].name }}", "inventory") == set()


def test_only_strings_with_markup_are_templates() -> None:
    assert is_template("Hi {{ x }}")
    assert is_template("{% if x %}a{% endif %}")
    assert not is_template("50% off {today}")


# Loops that would run for hours: each must stop within the time budget instead.
TEXT_BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
WHEN_BOMB = "range(100000) | select('in', range(100000) | list) | list | length > 0"


def test_a_nested_loop_in_a_template_stops_at_the_budget() -> None:
    with pytest.raises(MissingValueError, match="ms budget"):
        Template(TEXT_BOMB).render(CONTEXT)


def test_a_nested_loop_in_a_when_stops_at_the_budget() -> None:
    with pytest.raises(MissingValueError, match="ms budget"):
        Expression(WHEN_BOMB).holds(CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        # Skipped by the loop's own `if`, so the body never runs.
        "{% for i in range(100000) %}{% for j in range(100000) if false %}{% endfor %}"
        "{% endfor %}x",
        # A macro that calls itself twice: no loop, yet 2**40 calls.
        "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% else %}x{% endif %}"
        "{% endmacro %}{{ f(0) }}",
        # The same through a call block's `caller()`.
        "{% macro twice() %}{{ caller() }}{{ caller() }}{% endmacro %}"
        "{% macro g(n) %}{% if n %}{% call twice() %}{{ g(n - 1) }}{% endcall %}"
        "{% else %}x{% endif %}{% endmacro %}{{ g(40) }}",
        # A recursive loop that keeps descending.
        "{% for n in [40] recursive %}{% if n %}{{ loop([n - 1, n - 1]) }}{% else %}x"
        "{% endif %}{% endfor %}",
        # One pass, but a long one: a hundred thousand items through `map` and `join`.
        "{{ range(100000) | map('string') | join }}",
    ],
)
def test_runaway_rules_are_missing(source: str) -> None:
    with pytest.raises(MissingValueError, match="ms budget"):
        Template(source).render(CONTEXT)


def test_a_macro_that_recurses_without_end_is_missing() -> None:
    with pytest.raises(MissingValueError, match="too deeply"):
        Template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").render(CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' | center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ 'x' | indent(1000000000, true) }}",
        "{{ '%999999999s' % 'x' }}",
        "{{ '%*s' % (1000000000, 'x') }}",
        "{{ '%999999999s' | format('x') }}",
        "{{ '{:>999999999}'.format('x') }}",
        "{{ '{:{}}'.format('x', 1000000000) }}",
        "{{ ('x' * 10000).replace('x', 'y' * 10000) }}",
        "{{ ('x' * 10000) | replace('x', 'y' * 10000) }}",
        "{{ ('x' * 10000).join(range(100000) | map('string')) }}",
        "{{ range(100000) | join('x' * 10000) }}",
        "{{ [1] | batch(1000000000, 'x') | list | length }}",
        "{{ [1] | slice(1000000000) | list | length }}",
        "{{ lipsum(100000) }}",
        "{{ (10 ** 100) ** 100 }}",
        "{{ 'x'.encode() * 100000 }}",
        # Doubling a value, step after step.
        "{% set a = 'x' * 10000 %}" + "{% set a = a ~ a %}" * 8 + "{{ a | length }}",
        "{% set a = 'x' * 10000 %}" + "{% set a = a + a %}" * 8 + "{{ a | length }}",
        "{% set a = range(10000) | list %}" + "{% set _ = a.extend(a) %}" * 8 + "{{ a | length }}",
        "{% set a = 'x' * 10000 %}"
        + "{% set a = a | replace('x', 'xx') %}" * 12
        + "{{ a | length }}",
    ],
)
def test_steps_that_would_build_a_huge_value_are_missing(source: str) -> None:
    with pytest.raises(MissingValueError):
        Template(source).render(CONTEXT)


LISTS: dict[str, Any] = {
    "profile": {"first_name": "Ann", "tags": ["b", "a", "c"], "points": 120},
    "tree": [{"name": "a", "children": [{"name": "b", "children": []}]}],
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{% for t in profile.tags %}{{ loop.index }}/{{ loop.length }} {{ t }}"
            "{% if not loop.last %}, {% endif %}{% endfor %}",
            "1/3 b, 2/3 a, 3/3 c",
        ),
        ("{% for t in profile.tags if t != 'a' %}{{ t }}{% else %}none{% endfor %}", "bc"),
        ("{% for t in [] %}{{ t }}{% else %}none{% endfor %}", "none"),
        ("{{ profile.tags | sort | join(', ') }}", "a, b, c"),
        ("{{ profile.tags | map('upper') | select('ne', 'A') | join }}", "BC"),
        ("{{ profile.tags | unique | list | length }}", "3"),
        ("{{ range(5) | sum }} {{ range(4) | batch(3) | list }}", "10 [[0, 1, 2], [3]]"),
        (
            "{{ '%05.1f' % 3.14159 }} {{ '{:>4}'.format('ab') }} {{ '%s!' | format('hi') }}",
            "003.1   ab hi!",
        ),
        ("{{ profile.first_name ~ ' ' ~ (profile.points + 1) }}", "Ann 121"),
        ("{{ profile.first_name.center(7, '*') }}", "**Ann**"),
        ("{{ ', '.join(profile.tags) }}", "b, a, c"),
        (
            "{{ 'ab cd ef' | wordwrap(width=2, break_long_words=false, wrapstring='|') }}",
            "ab|cd|ef",
        ),
        (
            "{{ profile.tags | batch(linecount=2, fill_with='-') | list }}",
            "[['b', 'a'], ['c', '-']]",
        ),
        ("{{ profile.tags | slice(slices=2) | list }}", "[['b', 'a'], ['c']]"),
        ("{{ 'a\nb' | indent(width=2, first=true) }}", "  a\n  b"),
        ("{{ 'x' | center(width=5) }}|", "  x  |"),
        ("{{ profile.tags | tojson(indent=1) | length }}", "20"),
        (
            "{% for item in tree recursive %}{{ item.name }}"
            "{% if item.children %}({{ loop(item.children) }}){% endif %}{% endfor %}",
            "a(b)",
        ),
        (
            "{% macro hi(name) %}Hi {{ name }}{{ caller() }}{% endmacro %}"
            "{% call hi(profile.first_name) %}!{% endcall %}",
            "Hi Ann!",
        ),
    ],
)
def test_ordinary_loops_and_filters_render_as_before(source: str, expected: str) -> None:
    assert Template(source).render(LISTS) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{% for t in profile.tags %}{{ t }}{% endfor %}",
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}",
        "{{ range(3) | list }}",
        "{{ profile.tags | join(', ') }}",
        "{{ profile.tags | map('upper') | first }}",
        "{{ profile.tags | sort | first }}",
        "{{ '%s' % profile.first_name }}",
        "{{ '{}'.format(profile.first_name) }}",
        "{{ '%s' | format(profile.first_name) }}",
    ],
)
def test_code_that_can_loop_may_run_long(source: str) -> None:
    assert Template(source).may_run_long


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ profile.first_name | default('there') }}",
        "{% if profile.points > 100 %}gold{% else %}silver{% endif %}",
        "{{ profile.first_name | upper }} {{ profile.points % 7 }}",
        "{{ ['a', 'b'] | join(', ') }}",
        "{{ events.within('purchase', hours=2) }}",
    ],
)
def test_straight_line_code_does_not_run_long(source: str) -> None:
    assert not Template(source).may_run_long


def test_when_may_run_long_only_if_it_loops() -> None:
    assert Expression(WHEN_BOMB).may_run_long
    assert Expression("profile.tags | select('eq', 'a') | list").may_run_long
    assert not Expression("profile.tier == 'gold'").may_run_long
    assert not Expression("events.count('purchase') > 2 and profile.points >= 100").may_run_long


def _block(first_when: str, first_text: str = "runaway") -> dict[str, Any]:
    def variant(name: str, when: str, text: str) -> dict[str, Any]:
        return {
            "name": name,
            "when": when,
            "layers": [{"type": "text", "box": [0, 0, 100, 40], "text": text, "size": 12}],
        }

    return {
        "width": 100,
        "height": 40,
        "variants": [
            variant("runaway", first_when, first_text),
            variant("named", "profile.first_name", "Hi {{ profile.first_name }}"),
        ],
        "default": {
            "layers": [{"type": "fill", "color": "#ffffff"}],
            "link": "https://shop.example.com/",
        },
    }


@pytest.fixture(scope="module")
def resources() -> LocalResources:
    return LocalResources([], builtin_fonts())


@pytest.mark.parametrize(
    "definition",
    [_block(WHEN_BOMB), _block("profile.first_name", TEXT_BOMB)],
    ids=["when", "text"],
)
def test_a_runaway_rule_falls_through_to_the_next_variant(
    resources: LocalResources, definition: dict[str, Any]
) -> None:
    block = compile_block("b", definition, 1, resources)
    assert block.rules_may_run_long
    choice = choose_variant(block, CONTEXT, resources)
    assert choice.variant == "named"
    assert [(o.variant, o.chosen) for o in choice.trace] == [("runaway", False), ("named", True)]
    assert "ms budget" in choice.trace[0].reason


def test_a_block_of_straight_line_rules_does_not_run_long(resources: LocalResources) -> None:
    block = compile_block(
        "b", _block("profile.points > 100", "{{ profile.first_name }}"), 1, resources
    )
    assert not block.rules_may_run_long


class _Profile(dict[str, object]):
    """A profile that a weak reference can watch."""


def test_a_template_that_fails_over_leaves_nothing_for_the_cyclic_collector() -> None:
    """Once its error is handled, what the open read is freed at once: a reference cycle
    (Jinja2's rewritten traceback holds the error that holds it) would keep the open's
    data until the collector's oldest generations run, minutes later under load."""
    profile = _Profile(city="Lyon")
    watched = weakref.ref(profile)
    template = Template("Hello {{ profile.first_name }}")
    collecting = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(MissingValueError, match=r"profile\.first_name is missing") as caught:
            template.render({"profile": profile})
        del caught, profile
        assert watched() is None
    finally:
        if collecting:
            gc.enable()
