"""The progress layer: filled in proportion to value/max, clamped, rounded."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from renderers.layers import LAYER_KINDS
from renderers.layers.base import LayerError, parse_layer
from renderers.plan import RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts

GREEN, GREY = (47, 158, 68, 255), (233, 236, 239, 255)


def bar(**fields: object) -> Image.Image:
    resources = LocalResources([], builtin_fonts())
    values: dict[str, object] = {"box": [0, 0, 200, 20], **fields}
    layer = parse_layer(LAYER_KINDS["progress"], values, resources)
    return Image.open(io.BytesIO(render(RenderPlan(200, 20, 1, "png", (layer,))))).convert("RGBA")


@pytest.mark.parametrize(
    ("value", "filled"), [("30", 60), (750, 150), ("0", 0), (-5, 0), (120, 200)]
)
def test_the_bar_is_filled_to_value_over_max(value: object, filled: int) -> None:
    image = bar(value=value, max=100 if filled != 150 else 1000)
    if filled:
        assert image.getpixel((filled - 1, 10)) == GREEN
    if filled < 200:
        assert image.getpixel((filled, 10)) == GREY


def test_rounded_ends_shape_the_bar_too() -> None:
    image = bar(value=50, radius=10)
    assert image.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert image.getpixel((1, 10)) == GREEN
    assert image.getpixel((199, 19))[3] == 0  # type: ignore[index]


def test_max_must_be_positive_and_values_numbers() -> None:
    with pytest.raises(LayerError) as caught:
        bar(value=1, max=0)
    assert caught.value.field == "max"
    with pytest.raises(LayerError) as caught:
        bar(value="lots")
    assert caught.value.field == "value"
