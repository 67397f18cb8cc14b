"""Static layers drawn once: which may move below templated ones, and the same image after."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from renderers.layers import LAYER_KINDS
from renderers.layers.base import parse_layer
from renderers.plan import RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts
from server.blocks.compiling import compile_block
from server.blocks.layer_order import layer_order

NOW = datetime.fromisoformat("2026-12-20T10:00:00+01:00")
# A product card: photo, a personalized headline, fixed price and button, a badge over
# the headline, and a caption over the badge only.
CARD: list[dict[str, Any]] = [
    {"type": "fill", "color": "#ffffff"},
    {"type": "image", "box": [0, 0, 150, 150], "src": "photo.png", "fit": "cover"},
    {"type": "text", "box": [160, 10, 130, 40], "text": "Hi {{ profile.first_name }}", "size": 20},
    {"type": "text", "box": [160, 60, 130, 30], "text": "129.00 EUR", "size": 18},
    {"type": "rect", "box": [262, 40, 38, 20], "color": "#e03131cc", "radius": 6},
    {"type": "text", "box": [262, 55, 38, 20], "text": "new", "size": 10},
    {"type": "rect", "box": [160, 110, 130, 30], "color": "#1971c2", "radius": 8},
]


@pytest.fixture
def resources(tmp_path: Path) -> LocalResources:
    photo = Image.new("RGB", (300, 300), "#e03131")
    ImageDraw.Draw(photo).ellipse((60, 60, 240, 240), fill="#f08c00")
    photo.save(tmp_path / "photo.png")
    return LocalResources([tmp_path], builtin_fonts())


def block(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "width": 300,
        "height": 150,
        "variants": [{"name": "card", "layers": layers, "link": "https://shop.example.com/"}],
        "default": {
            "layers": [{"type": "fill", "color": "#000"}],
            "link": "https://shop.example.com/",
        },
    }


def test_static_layers_move_below_templated_ones_they_do_not_overlap(
    resources: LocalResources,
) -> None:
    variant = compile_block("card", block(CARD), 1, resources).variants[0]
    order = layer_order(variant)
    # The price and the button overlap no templated layer; the badge overlaps the
    # headline, and the caption the badge, which stays above the headline.
    assert order.order == (0, 1, 3, 6, 2, 4, 5)
    assert order.static == 4
    assert order.arrange("abcdefg") == ("a", "b", "d", "g", "c", "e", "f")


def test_a_fill_above_a_templated_layer_stays_above_it(resources: LocalResources) -> None:
    layers = [*CARD[:3], {"type": "fill", "color": "#00000022"}, CARD[3]]
    order = layer_order(compile_block("card", block(layers), 1, resources).variants[0])
    assert order.order == (0, 1, 2, 3, 4)
    assert order.static == 2


def test_a_countdown_is_never_static(resources: LocalResources) -> None:
    timer = {"type": "countdown", "box": [0, 100, 300, 50], "until": "2026-12-24T18:00:00+01:00"}
    layers = [CARD[0], timer, CARD[3]]
    order = layer_order(compile_block("card", block(layers), 1, resources).variants[0])
    assert order.order == (0, 2, 1)
    assert order.static == 2


@pytest.mark.parametrize("dpr", [1, 2])
@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_drawn_in_that_order_the_image_is_the_same(
    resources: LocalResources, dpr: int, fmt: str
) -> None:
    order = layer_order(compile_block("card", block(CARD), 1, resources).variants[0])
    for name in ("Ann", "Małgorzata"):
        resolved = copy.deepcopy(CARD)
        resolved[2]["text"] = f"Hi {name}"
        layers = tuple(
            parse_layer(LAYER_KINDS[fields.pop("type")], fields, resources) for fields in resolved
        )
        as_written = render(RenderPlan(300, 150, dpr, fmt, layers))  # type: ignore[arg-type]
        reordered = render(
            RenderPlan(300, 150, dpr, fmt, order.arrange(layers), static_prefix=order.static)  # type: ignore[arg-type]
        )
        assert decoded(reordered) == decoded(as_written)


def decoded(data: bytes) -> bytes:
    from io import BytesIO

    image = Image.open(BytesIO(data))
    return image.convert("RGBA").tobytes()
