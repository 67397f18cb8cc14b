"""Text layer options: case transforms, halo (stroke), direction-aware alignment."""

from __future__ import annotations

import io
from typing import cast

import pytest
from PIL import Image

from renderers.layers import LAYER_KINDS
from renderers.layers.base import parse_layer
from renderers.layers.text import TextLayer, transformed
from renderers.plan import Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts

BOX = [20, 10, 260, 60]


@pytest.fixture(scope="module")
def resources() -> LocalResources:
    return LocalResources([], builtin_fonts())


def text(resources: LocalResources, **fields: object) -> Layer:
    return parse_layer(LAYER_KINDS["text"], {"box": BOX, "size": 32, **fields}, resources)


def drawn(*layers: Layer, dpr: int = 1) -> Image.Image:
    data = render(RenderPlan(300, 80, dpr, "png", tuple(layers)))
    return Image.open(io.BytesIO(data)).convert("RGBA")


def colours(image: Image.Image) -> set[tuple[int, int, int, int]]:
    # An RGBA image's colours are 4-tuples (Pillow's types say any band count).
    found = image.getcolors(1_000_000) or []
    return {cast(tuple[int, int, int, int], colour) for _, colour in found}


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        ("upper", "ÉTÉ À ŁÓDŹ"),
        ("lower", "été à łódź"),
        ("title", "Été À Łódź"),
        ("none", "été à Łódź"),
    ],
)
def test_case_transforms(resources: LocalResources, transform: str, expected: str) -> None:
    layer = text(resources, text="été à Łódź", transform=transform)
    assert isinstance(layer, TextLayer)
    assert layer.text == expected


def test_title_case_keeps_the_rest_of_each_word() -> None:
    assert transformed("mcDonald o'neil", "title") == "McDonald O'neil"


def test_text_is_normalised_so_decomposed_accents_find_their_glyphs(
    resources: LocalResources,
) -> None:
    layer = text(resources, text="Zoe\u0308")
    assert isinstance(layer, TextLayer)
    assert layer.text == "Zoë"


@pytest.mark.parametrize("dpr", [1, 2])
def test_a_halo_surrounds_the_glyphs_in_its_own_colour(resources: LocalResources, dpr: int) -> None:
    white = parse_layer(LAYER_KINDS["fill"], {"color": "#ffffff"}, resources)
    plain = drawn(white, text(resources, text="Hello", color="#000000"), dpr=dpr)
    haloed = drawn(
        white,
        text(resources, text="Hello", color="#000000", stroke_width=3, stroke_color="#ff0000"),
        dpr=dpr,
    )
    assert (255, 0, 0, 255) in colours(haloed)
    assert (0, 0, 0, 255) in colours(haloed)  # the fill is still on top
    assert (255, 0, 0, 255) not in colours(plain)
    plain_box = plain.convert("L").point(lambda v: 255 if v < 250 else 0).getbbox()
    halo_box = haloed.convert("L").point(lambda v: 255 if v < 250 else 0).getbbox()
    assert plain_box is not None
    assert halo_box is not None
    assert halo_box[0] < plain_box[0]
    assert halo_box[2] > plain_box[2]


def ink_left(image: Image.Image) -> int:
    bbox = image.getbbox()
    assert bbox is not None
    return bbox[0]


def test_start_and_end_follow_the_direction_of_the_text(resources: LocalResources) -> None:
    hebrew_start = drawn(text(resources, text="שלום", align="start"))
    latin_start = drawn(text(resources, text="Hi", align="start"))
    hebrew_end = drawn(text(resources, text="שלום", align="end"))
    assert ink_left(latin_start) <= BOX[0] + 3  # left to right: start is the left
    assert ink_left(hebrew_start) > BOX[0] + BOX[2] // 2  # right to left: start is the right
    assert ink_left(hebrew_end) <= BOX[0] + 3
