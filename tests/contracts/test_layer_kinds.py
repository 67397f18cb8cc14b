"""What every layer kind promises, checked for each kind in the registry.

One suite over every kind, as imgproxy runs one over every storage: a kind that claims to
draw inside its box does so at every dpr, equal plans give equal bytes, every field
refuses a bad value naming the field (in the parser and in a block's 422), unknown fields
are refused, a kind that does not say it needs the clock draws the same at any time, and
each kind has a golden image. A kind added to `renderers.layers` without an example here,
a bad value for each of its fields or a golden fails this suite.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageSequence
from test_golden import CASES

from renderers.animation import FRAME_MS
from renderers.fields import BOX
from renderers.fonts import builtin_fonts, bundled_fonts, fallback_chain
from renderers.layers import LAYER_KINDS, frames, has_ended
from renderers.layers.base import Layer, LayerError, parse_layer
from renderers.plan import DPRS, ImageFormat, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources
from server.blocks.compiling import BlockError, compile_block

NOW = datetime(2026, 12, 20, 10, 0, 7, tzinfo=ZoneInfo("Europe/Warsaw"))
KINDS = sorted(LAYER_KINDS)
BOXED = sorted(name for name, kind in LAYER_KINDS.items() if kind.draws_inside_box)
CANVAS = (200, 120)  # block pixels
# A box well inside the canvas, and boxes reaching past its edges (clipped, not moved).
BOXES = [(40, 30, 120, 60), (150, 80, 120, 60), (-30, -20, 90, 70)]

# A layer of each kind that draws something, without its box.
EXAMPLES: dict[str, dict[str, Any]] = {
    "fill": {"color": "#0b6e4f80"},
    "rect": {"color": "#1971c2", "radius": 8},
    "text": {"text": "Wide text that wraps and overflows", "size": 40, "stroke_width": 3},
    "image": {"src": "photo.png", "fit": "cover", "radius": 5},
    "countdown": {"until": "2026-12-24T18:00:00+01:00", "size": 40},
    "progress": {"value": 70, "radius": 10},
    "qr": {"data": "https://shop.example.com/p/1"},
    "barcode": {"data": "42", "human_readable": "below"},
}
# For each field name, a value of a plausible JSON type that its kind must refuse.
BAD_VALUES: dict[str, object] = {
    "box": [0, 0, 0, 10],
    "color": "#zz",
    "radius": -1,
    "text": "   ",
    "size": 100_000,
    "min_size": 1,
    "font": "comic",
    "align": "justify",
    "valign": "center",
    "fit": "fill",
    "line_height": 5,
    "max_lines": 0,
    "transform": "shout",
    "stroke_width": 99,
    "stroke_color": "#zz",
    "src": "../photo.png",
    "value": "lots",
    "max": 0,
    "track": "#zz",
    "until": "tomorrow",
    "plus_hours": -1,
    "units": ["weeks"],
    "lang": "xx",
    "labels": "tiny",
    "label_size": 100_000,
    "label_color": "#zz",
    "separator": "----",
    "frames": 0,
    "data": "",
    "error": "Z",
    "background": "#zz",
    "quiet_zone": 11,
    "symbology": "upc",
    "human_readable": "above",
}


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> LocalResources:
    assets = tmp_path_factory.mktemp("assets")
    picture = Image.new("RGB", (160, 100), "#e03131")
    picture.paste("#1971c2", (80, 0, 160, 100))
    picture.save(assets / "photo.png")
    return LocalResources([assets], builtin_fonts(), fallback=fallback_chain(bundled_fonts(), []))


def raw_layer(name: str, box: tuple[int, int, int, int] = BOXES[0]) -> dict[str, Any]:
    fields = dict(EXAMPLES[name])
    if any(spec.name == BOX.name for spec in LAYER_KINDS[name].fields):
        fields[BOX.name] = list(box)
    return fields


def example(name: str, resources: LocalResources, **box: Any) -> Layer:
    return parse_layer(LAYER_KINDS[name], raw_layer(name, **box), resources)


def backdrop(size: tuple[int, int]) -> Image.Image:
    """A canvas with a different colour in every pixel and some transparency, so that any
    change to a pixel (painted over, or its alpha cleared) shows."""
    ramp = Image.linear_gradient("L")
    red = ramp.resize(size)
    green = ramp.rotate(90).resize(size)
    blue = Image.effect_noise(size, 60)
    alpha = (
        ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize(size).point(lambda v: 64 + v // 2)
    )
    return Image.merge("RGBA", (red, green, blue, alpha))


def render_one(
    layer: Layer, fmt: ImageFormat = "png", dpr: int = 1, now: datetime | None = NOW
) -> bytes:
    return render(RenderPlan(*CANVAS, dpr, fmt, (layer,), now=now))


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(LAYER_KINDS)


@pytest.mark.parametrize("name", BOXED)
def test_a_kind_that_draws_inside_its_box_has_a_literal_box(name: str) -> None:
    """The server reads the box when the block is stored, to order static layers."""
    boxes = [spec for spec in LAYER_KINDS[name].fields if spec.name == BOX.name]
    assert len(boxes) == 1
    assert boxes[0].required
    assert not boxes[0].templated


@pytest.mark.parametrize("box", BOXES, ids=str)
@pytest.mark.parametrize("dpr", DPRS)
@pytest.mark.parametrize("name", BOXED)
def test_draws_inside_its_box(
    resources: LocalResources, name: str, dpr: int, box: tuple[int, int, int, int]
) -> None:
    layer = example(name, resources, box=box)
    before = backdrop((CANVAS[0] * dpr, CANVAS[1] * dpr))
    after = before.copy()
    LAYER_KINDS[name].draw(after, layer, dpr, NOW)
    x, y, w, h = (v * dpr for v in box)
    inside = (max(x, 0), max(y, 0), min(x + w, after.width), min(y + h, after.height))
    assert after.crop(inside).tobytes() != before.crop(inside).tobytes(), "drew nothing"
    after.paste(before.crop(inside), inside[:2])
    assert after.tobytes() == before.tobytes(), "drew outside its box"


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif"])
@pytest.mark.parametrize("name", KINDS)
def test_equal_plans_give_equal_bytes(
    resources: LocalResources, name: str, fmt: ImageFormat
) -> None:
    first, second = example(name, resources), example(name, resources)
    assert first == second
    assert hash(first) == hash(second)
    assert render_one(first, fmt, dpr=2) == render_one(second, fmt, dpr=2)


@pytest.mark.parametrize("name", KINDS)
def test_a_kind_that_does_not_need_the_clock_draws_the_same_at_any_time(
    resources: LocalResources, name: str
) -> None:
    layer = example(name, resources)
    # Every unit of a time is different a day, an hour, a minute and a second later.
    later_time = NOW + timedelta(days=1, hours=1, minutes=1, seconds=1)
    now, later = render_one(layer), render_one(layer, now=later_time)
    if not LAYER_KINDS[name].needs_clock:
        assert now == later
        assert render_one(layer, now=None) == now
    else:
        assert now != later  # what it shows follows the clock
        with pytest.raises(ValueError, match="now"):
            render_one(layer, now=None)


@pytest.mark.parametrize("name", KINDS)
def test_a_kind_that_can_end_says_when(resources: LocalResources, name: str) -> None:
    kind, layer = LAYER_KINDS[name], example(name, resources)
    end = kind.ends_at(layer, NOW)
    if not kind.can_end:
        assert end is None
        assert not has_ended([layer], NOW + timedelta(days=10_000))
        return
    assert end is not None
    assert not has_ended([layer], end - timedelta(seconds=1))
    assert has_ended([layer], end)


@pytest.mark.parametrize("name", KINDS)
def test_a_gif_animates_only_what_says_it_animates(resources: LocalResources, name: str) -> None:
    layer = example(name, resources)
    gif = Image.open(io.BytesIO(render_one(layer, "gif")))
    durations = [frame.info.get("duration", 0) for frame in ImageSequence.Iterator(gif)]
    if frames(layer) == 1:
        assert len(durations) == 1
    else:
        assert LAYER_KINDS[name].animates
        # Frames that look alike are stored once, shown for their seconds together.
        assert len(durations) > 1
        assert sum(durations) == frames(layer) * FRAME_MS


def _bad_definitions(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (spec.name, {**raw_layer(name), spec.name: BAD_VALUES[spec.name]})
        for spec in LAYER_KINDS[name].fields
    ]


@pytest.mark.parametrize("name", KINDS)
def test_every_field_refuses_a_bad_value_naming_the_field(
    resources: LocalResources, name: str
) -> None:
    kind = LAYER_KINDS[name]
    for field, fields in _bad_definitions(name):
        for bad in (fields[field], None, {"no": "such"}):
            with pytest.raises(LayerError) as caught:
                parse_layer(kind, {**fields, field: bad}, resources)
            assert caught.value.field == field, (field, bad)


@pytest.mark.parametrize("name", KINDS)
def test_a_block_with_a_bad_field_is_refused_naming_its_path(
    resources: LocalResources, name: str
) -> None:
    for field, fields in [
        *_bad_definitions(name),
        ("opacity", {**raw_layer(name), "opacity": 0.5}),
    ]:
        with pytest.raises(BlockError) as caught:
            compile_block("hero", block_of({"type": name, **fields}), 1, resources)
        assert f"default.layers[1].{field}" in {p.field for p in caught.value.problems}


@pytest.mark.parametrize("name", KINDS)
def test_unknown_fields_are_refused(resources: LocalResources, name: str) -> None:
    with pytest.raises(LayerError) as caught:
        parse_layer(LAYER_KINDS[name], {**raw_layer(name), "opacity": 0.5}, resources)
    assert caught.value.field == "opacity"
    assert "unknown field" in caught.value.message


@pytest.mark.parametrize("name", KINDS)
def test_the_example_is_a_valid_block(resources: LocalResources, name: str) -> None:
    """The suite's examples pass the server too, so its refusals above are the bad value's."""
    block = compile_block("hero", block_of({"type": name, **raw_layer(name)}), 1, resources)
    assert [layer.kind.name for layer in block.default.layers] == ["fill", name]


@pytest.mark.parametrize("name", KINDS)
def test_has_a_golden_image(name: str) -> None:
    goldens = Path(__file__).parent.parent / "golden"
    cases = [case for case, (_, _, raw) in CASES.items() if any(r["type"] == name for r in raw)]
    assert cases, f"add a {name} case to tests/renderers/test_golden.py"
    assert any((goldens / f"{case}.png").is_file() for case in cases)


def block_of(layer: dict[str, Any]) -> dict[str, Any]:
    return {
        "width": CANVAS[0],
        "height": CANVAS[1],
        "default": {
            "layers": [{"type": "fill", "color": "#ffffff"}, layer],
            "link": "https://shop.example.com/",
        },
    }


def documented_fields() -> dict[str, dict[str, bool]]:
    """docs/blocks.md's table of layer kinds: each kind's fields, and whether required."""
    page = Path(__file__).resolve().parents[2] / "docs" / "blocks.md"
    table = page.read_text(encoding="utf-8").split("### Layer kinds", 1)[1].split("\n\n")[2]
    kinds: dict[str, dict[str, bool]] = {}
    kind = ""
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        kind = cells[0].strip("`") or kind
        for field in cells[1].split(","):
            name = field.split("`")[1]
            kinds.setdefault(kind, {})[name] = cells[2] == "yes"
    return kinds


@pytest.mark.parametrize("name", KINDS)
def test_the_block_writers_table_documents_every_field(name: str) -> None:
    fields = {spec.name: spec.required for spec in LAYER_KINDS[name].fields}
    assert documented_fields().get(name) == fields


def test_the_block_writers_table_documents_no_other_kind() -> None:
    assert sorted(documented_fields()) == KINDS
