"""Text fitting: wrapping, shrink-to-fit, ellipsis, measured with the real font."""

from __future__ import annotations

import string

import pytest

from renderers.glyphs import load_font
from renderers.resources import LocalResources, builtin_fonts, default_stack
from renderers.runs import Ruler
from renderers.text_layout import ELLIPSIS, MAX_CHARS, TextLayout, layout_text

STACK = default_stack()
LONG = "Your order of three pairs of running shoes has shipped and will arrive on Tuesday"


def lay(
    text: str,
    width: int,
    height: int,
    *,
    size: int = 32,
    min_size: int = 8,
    max_lines: int | None = None,
    shrink: bool = True,
    scale: int = 1,
) -> TextLayout:
    return layout_text(
        text,
        STACK,
        width,
        height,
        size=size,
        min_size=min_size,
        max_lines=max_lines,
        shrink=shrink,
        scale=scale,
    )


def assert_inside(layout: TextLayout, width: int, height: int, scale: int = 1) -> None:
    assert all(layout.line_width(i) <= width * scale for i in range(len(layout.lines)))
    assert layout.height <= height * scale


def test_short_text_keeps_the_largest_size() -> None:
    layout = lay("Hi Ann", 300, 60)
    assert layout.size == 32
    assert layout.lines == ("Hi Ann",)
    assert not layout.truncated


def test_long_text_shrinks_and_still_fits() -> None:
    short, long = lay("Hi Ann", 300, 60), lay(LONG, 300, 60)
    assert long.size < short.size
    assert not long.truncated
    assert " ".join(long.lines) == LONG
    assert_inside(long, 300, 60)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_shrink_picks_the_largest_size_that_fits(scale: int) -> None:
    layout = lay(LONG, 300, 80, scale=scale)
    assert_inside(layout, 300, 80, scale)
    one_larger = lay(LONG, 300, 80, size=layout.size + 1, min_size=layout.size + 1, scale=scale)
    assert one_larger.truncated


def test_ellipsis_when_even_the_smallest_size_does_not_fit() -> None:
    layout = lay(LONG * 3, 200, 40, min_size=14)
    assert layout.size == 14
    assert layout.truncated
    assert layout.lines[-1].endswith(ELLIPSIS)
    assert_inside(layout, 200, 40)


def test_fit_none_keeps_the_size_and_truncates() -> None:
    layout = lay(LONG, 200, 80, shrink=False)
    assert layout.size == 32
    assert layout.truncated
    assert len(layout.lines) == 2  # 80 px hold two 32 px lines at 1.2
    assert layout.lines[-1].endswith(ELLIPSIS)
    assert_inside(layout, 200, 80)


def test_max_lines_caps_the_lines() -> None:
    layout = lay(LONG, 200, 400, max_lines=2, shrink=False)
    assert len(layout.lines) == 2
    assert layout.truncated
    assert layout.lines[1].endswith(ELLIPSIS)


def test_max_lines_makes_shrink_go_smaller() -> None:
    free, capped = lay(LONG, 300, 400), lay(LONG, 300, 400, max_lines=2)
    assert capped.size < free.size
    assert len(capped.lines) <= 2
    assert not capped.truncated


def test_explicit_newlines_break_lines() -> None:
    layout = lay("Hello\nAnn", 400, 200)
    assert layout.lines == ("Hello", "Ann")


def test_blank_line_between_paragraphs_is_kept() -> None:
    assert lay("One\n\nTwo", 400, 200).lines == ("One", "", "Two")


def test_a_word_wider_than_the_box_is_broken_by_characters() -> None:
    word = "Supercalifragilisticexpialidocious"
    layout = lay(word, 120, 400, shrink=False, size=24)
    assert len(layout.lines) > 1
    assert "".join(layout.lines) == word
    assert_inside(layout, 120, 400)


def test_ellipsis_trims_whole_words_first() -> None:
    layout = lay("alpha beta gamma delta epsilon", 150, 30, shrink=False, size=20)
    assert layout.truncated
    kept = layout.lines[0].removesuffix(ELLIPSIS)
    assert "alpha beta gamma delta epsilon".startswith(kept)
    assert kept.split()[-1] in {"alpha", "beta", "gamma", "delta"}  # no half word
    font = load_font(STACK.primary, 20)
    assert font.getlength(layout.lines[0]) <= 150


def test_box_lower_than_one_line_still_gets_one_line() -> None:
    layout = lay("Hello", 300, 10, shrink=False)
    assert layout.lines == ("Hello",)


def test_runaway_text_is_laid_out_quickly_and_cut() -> None:
    layout = lay("x" * 100_000, 300, 100, scale=3)
    assert layout.truncated
    assert layout.lines[-1].endswith(ELLIPSIS)
    assert_inside(layout, 300, 100, 3)


def test_text_beyond_max_chars_ends_with_an_ellipsis_even_with_room_to_spare() -> None:
    layout = lay("ab " * MAX_CHARS, 4000, 4000, size=4, min_size=4)
    assert len(layout.lines) < 20  # it had the room
    assert layout.truncated
    assert layout.lines[-1].endswith(ELLIPSIS)


@pytest.mark.slow
def test_the_unshaped_bound_is_never_below_the_shaped_width() -> None:
    """Lines the bound says fit are laid out without shaping: it must never be too small."""
    texts = [a + b for a in string.printable[:95] for b in string.printable[:95]]
    texts += [LONG, "Thanks, Zoë!", "Małgorzata Ørsted", "Привет, Ёлка", "Ωμέγα"]
    resources = LocalResources([], builtin_fonts())
    for name in ("roboto-regular", "roboto-bold", "roboto-black", "sans"):
        ruler = Ruler(resources.font(name), 40)
        for text in texts:
            bound = ruler.width_at_most(text, 40)
            assert bound is not None, text
            assert bound >= ruler.width(text, 40) - 1e-9, text


@pytest.mark.parametrize("text", ["שלום עולם", "مرحبا", "नमस्ते", "e\u0301", "a👍b", "a\u200db"])
def test_text_that_needs_shaping_has_no_unshaped_bound(text: str) -> None:
    assert Ruler(STACK, 40).width_at_most(text, 40) is None


def test_a_greeting_well_inside_its_box_is_one_line_at_full_size() -> None:
    layout = lay("Hello Małgorzata", 380, 80, size=30)
    assert layout.lines == ("Hello Małgorzata",)
    assert layout.size == 30
    assert_inside(layout, 380, 80)
