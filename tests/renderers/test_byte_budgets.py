"""Byte budgets (`max_bytes`) for every format, and the cached static prefix of a plan."""

from __future__ import annotations

import io
import random
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from renderers.encode import ByteBudgetError
from renderers.layers import LAYER_KINDS
from renderers.layers.base import parse_layer
from renderers.plan import ImageFormat, Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts


@pytest.fixture
def resources(tmp_path: Path) -> LocalResources:
    rng = random.Random(7)
    photo = Image.new("RGB", (300, 200))
    photo.putdata(
        [
            (x + rng.randrange(40), y + rng.randrange(40), (x * y) % 256)
            for y in range(200)
            for x in range(300)
        ]
    )
    photo.save(tmp_path / "photo.png")
    sixteen = Image.new("RGB", (300, 200))
    colours = [(17 * i, 255 - 17 * i, (97 * i) % 256) for i in range(16)]
    sixteen.putdata([colours[rng.randrange(16)] for _ in range(300 * 200)])
    sixteen.save(tmp_path / "sixteen.png")
    return LocalResources([tmp_path], builtin_fonts())


def photo_card(resources: LocalResources) -> tuple[Layer, ...]:
    return (
        parse_layer(LAYER_KINDS["image"], {"box": [0, 0, 300, 200], "src": "photo.png"}, resources),
        parse_layer(
            LAYER_KINDS["text"],
            {"box": [10, 10, 280, 40], "text": "Trail boots", "color": "white"},
            resources,
        ),
    )


def flat_card(resources: LocalResources) -> tuple[Layer, ...]:
    return (
        parse_layer(LAYER_KINDS["fill"], {"color": "#0b6e4f"}, resources),
        parse_layer(LAYER_KINDS["rect"], {"box": [20, 20, 100, 60], "color": "#ffd43b"}, resources),
    )


def size_of(layers: tuple[Layer, ...], fmt: ImageFormat, max_bytes: int | None = None) -> int:
    return len(render(RenderPlan(300, 200, 1, fmt, layers, max_bytes=max_bytes)))


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif"])
def test_a_budget_is_met_by_cheaper_settings(resources: LocalResources, fmt: ImageFormat) -> None:
    layers = photo_card(resources)
    unbounded = size_of(layers, fmt)
    budget = unbounded * 2 // 3
    data = render(RenderPlan(300, 200, 1, fmt, layers, max_bytes=budget))
    assert len(data) <= budget
    image = Image.open(io.BytesIO(data))
    assert image.size == (300, 200)
    reference = Image.open(io.BytesIO(render(RenderPlan(300, 200, 1, fmt, layers))))
    difference = ImageChops.difference(image.convert("RGB"), reference.convert("RGB"))
    # Still the same picture: few pixels are far off.
    assert sum(difference.convert("L").histogram()[64:]) < 300 * 200 * 0.05


def test_a_budget_that_is_met_already_changes_nothing(resources: LocalResources) -> None:
    layers = photo_card(resources)
    for fmt in ("png", "jpg", "gif"):
        plain = render(RenderPlan(300, 200, 1, fmt, layers))
        assert render(RenderPlan(300, 200, 1, fmt, layers, max_bytes=len(plain))) == plain


def test_few_colours_make_a_lossless_palette_png(resources: LocalResources) -> None:
    layers = (
        parse_layer(
            LAYER_KINDS["image"], {"box": [0, 0, 300, 200], "src": "sixteen.png"}, resources
        ),
    )
    rgb = render(RenderPlan(300, 200, 1, "png", layers))
    data = render(RenderPlan(300, 200, 1, "png", layers, max_bytes=len(rgb) - 1))
    image = Image.open(io.BytesIO(data))
    assert image.mode == "P"
    exact = Image.open(io.BytesIO(rgb)).convert("RGB")
    difference = ImageChops.difference(image.convert("RGB"), exact)
    assert difference.getbbox() is None


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif"])
def test_an_impossible_budget_is_an_error(resources: LocalResources, fmt: ImageFormat) -> None:
    with pytest.raises(ByteBudgetError, match=r"does not fit in 1,024 bytes"):
        render(RenderPlan(300, 200, 1, fmt, photo_card(resources), max_bytes=1024))


def test_a_budget_below_any_image_is_refused_by_the_plan() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RenderPlan(300, 200, 1, "png", (), max_bytes=100)


# The static prefix


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_static_prefix_renders_the_same_and_draws_the_prefix_once(
    resources: LocalResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = (*photo_card(resources)[:1], *flat_card(resources)[1:], *photo_card(resources)[1:])
    formats: tuple[ImageFormat, ...] = ("png", "jpg", "gif")
    expected = {fmt: decoded(render(RenderPlan(300, 200, 2, fmt, layers))) for fmt in formats}
    drawn: list[str] = []
    image_kind = LAYER_KINDS["image"]

    class CountingImage:
        name, fields, make, needs_clock = image_kind.name, image_kind.fields, image_kind.make, False

        def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: object) -> None:
            drawn.append(layer.kind)
            image_kind.draw(canvas, layer, scale, None)

    monkeypatch.setitem(LAYER_KINDS, "image", CountingImage())
    for _ in range(3):
        for fmt in formats:
            image = decoded(render(RenderPlan(300, 200, 2, fmt, layers, static_prefix=2)))
            assert image.mode == expected[fmt].mode
            assert image.tobytes() == expected[fmt].tobytes()
    assert drawn == ["image"]  # once for every format


def test_a_static_prefix_png_keeps_to_its_budget(resources: LocalResources) -> None:
    """Reusing the static rows' compression is skipped when it would not fit the budget."""
    layers = photo_card(resources)
    reused = render(RenderPlan(300, 200, 1, "png", layers, static_prefix=1))
    data = render(
        RenderPlan(300, 200, 1, "png", layers, static_prefix=1, max_bytes=len(reused) - 1)
    )
    assert len(data) < len(reused)
    assert decoded(data).mode == "P"  # the budget's first cheaper step: a palette


def test_a_clock_layer_cannot_be_static(resources: LocalResources) -> None:
    timer = parse_layer(
        LAYER_KINDS["countdown"], {"box": [0, 0, 300, 100], "until": "2030-01-01"}, resources
    )
    now = datetime.fromisoformat("2029-12-31T12:00:00+00:00")
    with pytest.raises(ValueError, match="static prefix"):
        render(RenderPlan(300, 200, 1, "png", (timer,), now=now, static_prefix=1))
    with pytest.raises(ValueError, match="static_prefix"):
        RenderPlan(300, 200, 1, "png", (timer,), static_prefix=2)
