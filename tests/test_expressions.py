"""The rule language: what counts as missing, the sandbox, and its bounds."""

from __future__ import annotations

import pytest

from server.expressions import (
    Expression,
    ExpressionError,
    MissingValueError,
    Template,
    constant_subscripts,
    is_template,
)

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
