"""The renderer, end to end: plans drawn with real Pillow, the encoded bytes decoded again."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, ImageChops

from renderers import render as render_module
from renderers.encode import CONTENT_TYPES, TRANSPARENT_GIF
from renderers.fields import FieldError
from renderers.layers import LAYER_KINDS
from renderers.layers.base import LayerError, parse_layer
from renderers.layers.text import TextLayer
from renderers.plan import ImageFormat, Layer, RenderPlan
from renderers.render import RenderDeadlineExceeded, render
from renderers.resources import Asset, LocalResources, builtin_fonts

WHITE = "#ffffff"
TEXT_BOX = [40, 30, 200, 60]
LONG = "An extraordinarily long announcement about shoes, socks and everything else we sell"
MakeLayer = Callable[..., Layer]


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    directory = tmp_path / "assets"
    directory.mkdir()
    return directory


@pytest.fixture
def resources(assets: Path) -> LocalResources:
    return LocalResources([assets], builtin_fonts())


@pytest.fixture
def make(resources: LocalResources) -> MakeLayer:
    def make_layer(kind: str, **fields: object) -> Layer:
        return parse_layer(LAYER_KINDS[kind], fields, resources)

    return make_layer


def draw(
    layers: list[Layer], width: int = 300, height: int = 120, dpr: int = 1, fmt: ImageFormat = "png"
) -> Image.Image:
    """Render, then decode the bytes: what an email client would show."""
    data = render(RenderPlan(width, height, dpr, fmt, tuple(layers)))
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGBA")


def changed(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the pixels that differ between two renders."""
    return ImageChops.difference(a, b).getbbox(alpha_only=False)


def inside(bbox: tuple[int, int, int, int] | None, box: list[int], scale: int = 1) -> bool:
    x, y, w, h = (v * scale for v in box)
    return (
        bbox is not None and x <= bbox[0] and y <= bbox[1] and bbox[2] <= x + w and bbox[3] <= y + h
    )


def save_png(path: Path, size: tuple[int, int], halves: tuple[str, str]) -> None:
    """A PNG whose left half is one colour and right half another."""
    image = Image.new("RGBA", size, halves[0])
    image.paste(halves[1], (size[0] // 2, 0, size[0], size[1]))
    image.save(path)


# Formats and sizes


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif"])
@pytest.mark.parametrize("dpr", [1, 2, 3])
def test_every_format_decodes_at_the_exact_size(
    make: MakeLayer, fmt: ImageFormat, dpr: int
) -> None:
    layers = [make("fill", color="#fafafa"), make("text", box=TEXT_BOX, text="Hello Ann")]
    data = render(RenderPlan(300, 120, dpr, fmt, tuple(layers)))
    image = Image.open(io.BytesIO(data))
    assert image.size == (300 * dpr, 120 * dpr)
    assert Image.MIME[image.format or ""] == CONTENT_TYPES[fmt]


def test_transparent_gif_is_one_transparent_pixel() -> None:
    image = Image.open(io.BytesIO(TRANSPARENT_GIF))
    assert image.format == "GIF"
    assert image.size == (1, 1)
    assert image.convert("RGBA").getpixel((0, 0))[3] == 0  # type: ignore[index]


@pytest.mark.parametrize("dpr", [0, 4])
def test_plan_rejects_an_unknown_dpr(dpr: int) -> None:
    with pytest.raises(ValueError, match="dpr"):
        RenderPlan(100, 100, dpr, "png", ())


def test_plan_rejects_more_pixels_than_the_limit() -> None:
    RenderPlan(4000, 1500, 2, "png", ())
    with pytest.raises(ValueError, match="pixels"):
        RenderPlan(4000, 1500, 3, "png", ())


def test_equal_plans_are_equal_and_hashable(make: MakeLayer) -> None:
    def plan() -> RenderPlan:
        return RenderPlan(300, 120, 2, "png", (make("text", box=TEXT_BOX, text="Hi"),))

    assert plan() == plan()
    assert hash(plan()) == hash(plan())


# Colours


def test_png_fill_colour_is_exact(make: MakeLayer) -> None:
    image = draw([make("fill", color="#3366cc")])
    assert image.getpixel((150, 60)) == (0x33, 0x66, 0xCC, 255)


@pytest.mark.parametrize("fmt", ["jpg", "gif"])
def test_lossy_fill_colour_is_close(make: MakeLayer, fmt: ImageFormat) -> None:
    pixel = draw([make("fill", color="rgb(200, 80, 40)")], fmt=fmt).getpixel((150, 60))
    assert isinstance(pixel, tuple)
    assert all(abs(got - want) <= 4 for got, want in zip(pixel, (200, 80, 40, 255), strict=True))


def test_semi_transparent_fill_blends_with_what_is_below(make: MakeLayer) -> None:
    image = draw([make("fill", color="#ff0000"), make("fill", color="#0000ff80")])
    red, green, blue, alpha = image.getpixel((10, 10))  # type: ignore[misc]
    assert (green, alpha) == (0, 255)
    assert abs(red - 127) <= 1
    assert abs(blue - 128) <= 1


def test_rect_is_drawn_in_its_box_only(make: MakeLayer) -> None:
    image = draw([make("fill", color="white"), make("rect", box=[10, 20, 50, 30], color="#00ff00")])
    assert image.getpixel((10, 20)) == (0, 255, 0, 255)
    assert image.getpixel((59, 49)) == (0, 255, 0, 255)
    assert image.getpixel((60, 49)) == (255, 255, 255, 255)
    assert image.getpixel((59, 50)) == (255, 255, 255, 255)


def test_rounded_rect_leaves_its_corners_out(make: MakeLayer) -> None:
    image = draw([make("rect", box=[10, 10, 100, 60], color="#000000", radius=20)], dpr=2)
    assert image.getpixel((20, 20))[3] == 0  # type: ignore[index]
    assert image.getpixel((20 + 200 - 1, 20))[3] == 0  # type: ignore[index]
    assert image.getpixel((120, 80)) == (0, 0, 0, 255)  # the middle
    assert image.getpixel((20, 80)) == (0, 0, 0, 255)  # the left edge, between the corners


def test_semi_transparent_rounded_rect_blends(make: MakeLayer) -> None:
    rect = make("rect", box=[10, 10, 100, 60], color="#00000080", radius=8)
    pixel = draw([make("fill", color=WHITE), rect]).getpixel((60, 40))
    assert pixel == (127, 127, 127, 255)


def test_transparency_survives_png_and_gif_but_jpeg_goes_onto_white(make: MakeLayer) -> None:
    layers = [make("rect", box=[0, 0, 100, 120], color="#ff0000")]
    assert draw(layers).getpixel((200, 60))[3] == 0  # type: ignore[index]
    gif = draw(layers, fmt="gif")
    assert gif.getpixel((200, 60))[3] == 0  # type: ignore[index]
    assert gif.getpixel((50, 60)) == (255, 0, 0, 255)
    jpeg = draw(layers, fmt="jpg").getpixel((200, 60))
    assert isinstance(jpeg, tuple)
    assert min(jpeg) >= 250


# Text


@pytest.mark.parametrize("dpr", [1, 2, 3])
def test_text_pixels_change_with_the_text_inside_its_box_only(make: MakeLayer, dpr: int) -> None:
    ann = draw([make("fill", color=WHITE), make("text", box=TEXT_BOX, text="Hello Ann")], dpr=dpr)
    bob = draw([make("fill", color=WHITE), make("text", box=TEXT_BOX, text="Hello Bob")], dpr=dpr)
    difference = changed(ann, bob)
    assert difference is not None
    assert inside(difference, TEXT_BOX, dpr)


@pytest.mark.parametrize("dpr", [1, 2, 3])
@pytest.mark.parametrize("fit", ["shrink", "none"])
@pytest.mark.parametrize(("align", "valign"), [("left", "top"), ("right", "bottom")])
def test_text_never_draws_outside_its_box(
    make: MakeLayer, dpr: int, fit: str, align: str, valign: str
) -> None:
    box = [50, 40, 90, 24]
    text = make(
        "text",
        box=box,
        text=LONG + "\nsecond paragraph",
        size=60,
        min_size=30,
        fit=fit,
        align=align,
        valign=valign,
        line_height=0.8,
    )
    background = draw([make("fill", color=WHITE)], dpr=dpr)
    with_text = draw([make("fill", color=WHITE), text], dpr=dpr)
    assert inside(changed(background, with_text), box, dpr)


def test_text_partly_off_the_canvas_is_clipped(make: MakeLayer) -> None:
    box = [-40, 100, 200, 60]
    background = draw([make("fill", color=WHITE)])
    with_text = draw([make("fill", color=WHITE), make("text", box=box, text="Hello Ann", size=40)])
    difference = changed(background, with_text)
    assert difference is not None
    assert difference[0] == 0  # drawn up to the canvas edge
    assert difference[3] <= 120


def ink(make: MakeLayer, **options: object) -> tuple[int, int, int, int]:
    """Where the text's ink is, for a text layer in TEXT_BOX."""
    fields: dict[str, object] = {"text": "Hi", "size": 20, **options}
    text = make("text", box=TEXT_BOX, **fields)
    bbox = changed(draw([make("fill", color=WHITE)]), draw([make("fill", color=WHITE), text]))
    assert bbox is not None
    return bbox


def test_horizontal_alignment_moves_the_ink(make: MakeLayer) -> None:
    x, _, w, _ = TEXT_BOX
    left, center, right = (ink(make, align=a) for a in ("left", "center", "right"))
    assert x <= left[0] <= x + 3
    assert x + w - 3 <= right[2] <= x + w
    middle = (center[0] + center[2]) / 2
    assert abs(middle - (x + w / 2)) <= 2
    assert left[0] < center[0] < right[0]


def test_vertical_alignment_moves_the_ink(make: MakeLayer) -> None:
    _, y, _, h = TEXT_BOX
    top, middle, bottom = (ink(make, valign=v) for v in ("top", "middle", "bottom"))
    assert y <= top[1] <= y + 8
    assert y + h - 10 <= bottom[3] <= y + h
    assert top[1] < middle[1] < bottom[1]
    assert abs((middle[1] + middle[3]) / 2 - (y + h / 2)) <= 3


def test_shrink_draws_long_text_smaller(make: MakeLayer) -> None:
    # One line each, and no descenders: the ink height is proportional to the size.
    short = ink(make, text="Hello Ann", size=40, max_lines=1)
    long = ink(make, text="Hello Annabelle Smith", size=40, max_lines=1)
    assert short[3] - short[1] > 28  # the cap height of Roboto at 40 px
    assert long[3] - long[1] < 0.8 * (short[3] - short[1])
    assert long[2] <= TEXT_BOX[0] + TEXT_BOX[2]


def test_text_colour_is_drawn(make: MakeLayer) -> None:
    image = draw(
        [make("fill", color=WHITE), make("text", box=TEXT_BOX, text="█", size=40, color="#cc0000")]
    )
    assert (0xCC, 0, 0, 255) in {colour for _, colour in image.getcolors(maxcolors=100_000) or []}


# Images


@pytest.fixture
def red_blue(assets: Path) -> str:
    save_png(assets / "red_blue.png", (100, 50), ("#ff0000", "#0000ff"))
    return "red_blue.png"


RED, BLUE, CLEAR = (255, 0, 0, 255), (0, 0, 255, 255), (0, 0, 0, 0)


def test_contain_fits_the_whole_image_centred(make: MakeLayer, red_blue: str) -> None:
    image = draw([make("image", box=[0, 0, 100, 100], src=red_blue, fit="contain")], 100, 100)
    assert image.getpixel((50, 10)) == CLEAR  # letterboxed above
    assert image.getpixel((50, 90)) == CLEAR  # and below
    assert image.getpixel((10, 50)) == RED
    assert image.getpixel((90, 50)) == BLUE
    assert image.getbbox() == (0, 25, 100, 75)


def test_contain_at_dpr_2_is_drawn_at_scale(make: MakeLayer, red_blue: str) -> None:
    layer = make("image", box=[0, 0, 100, 100], src=red_blue)
    image = draw([layer], 100, 100, dpr=2)
    assert image.size == (200, 200)
    assert image.getbbox() == (0, 50, 200, 150)


def test_cover_fills_the_box_and_crops_the_centre(make: MakeLayer, red_blue: str) -> None:
    image = draw([make("image", box=[0, 0, 50, 100], src=red_blue, fit="cover")], 100, 100)
    assert image.getbbox() == (0, 0, 50, 100)
    assert image.getpixel((10, 50)) == RED
    assert image.getpixel((40, 50)) == BLUE
    assert image.getpixel((10, 0)) == RED


def test_stretch_fills_the_box(make: MakeLayer, red_blue: str) -> None:
    image = draw([make("image", box=[10, 10, 60, 80], src=red_blue, fit="stretch")], 100, 100)
    assert image.getbbox() == (10, 10, 70, 90)
    assert image.getpixel((12, 88)) == RED
    assert image.getpixel((68, 12)) == BLUE


def test_image_radius_rounds_the_corners(make: MakeLayer, red_blue: str) -> None:
    layer = make("image", box=[0, 0, 100, 100], src=red_blue, fit="cover", radius=30)
    image = draw([layer], 100, 100)
    assert image.getpixel((0, 0)) == CLEAR
    assert image.getpixel((99, 99)) == CLEAR
    assert image.getpixel((50, 50))[3] == 255  # type: ignore[index]
    assert image.getpixel((0, 50)) == RED


def test_image_partly_off_the_canvas(make: MakeLayer, red_blue: str) -> None:
    image = draw([make("image", box=[-50, 0, 100, 50], src=red_blue, fit="stretch")], 100, 100)
    assert image.getbbox() == (0, 0, 50, 50)
    assert image.getpixel((10, 10)) == BLUE


def test_asset_is_decoded_once_and_reloaded_when_it_changes(
    resources: LocalResources, assets: Path, red_blue: str
) -> None:
    first = resources.asset(red_blue)
    assert resources.asset(red_blue) is first
    save_png(assets / red_blue, (100, 50), ("#00ff00", "#00ff00"))
    stat = (assets / red_blue).stat()
    os.utime(assets / red_blue, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    second = resources.asset(red_blue)
    assert second.digest != first.digest
    assert second.image.getpixel((0, 0)) == (0, 255, 0, 255)


def test_asset_names_in_subdirectories(resources: LocalResources, assets: Path) -> None:
    (assets / "products").mkdir()
    save_png(assets / "products" / "shoe.png", (4, 4), ("#ff0000", "#ff0000"))
    asset = resources.asset("products/shoe.png")
    assert isinstance(asset, Asset)
    assert asset.image.mode == "RGBA"
    assert asset.image.size == (4, 4)


def test_asset_outside_the_directory_is_refused(
    resources: LocalResources, assets: Path, tmp_path: Path
) -> None:
    save_png(tmp_path / "secret.png", (4, 4), ("#ff0000", "#ff0000"))
    (assets / "link.png").symlink_to(tmp_path / "secret.png")
    for name in ("../secret.png", str(tmp_path / "secret.png"), "link.png", "a/../../secret.png"):
        with pytest.raises(FieldError):
            resources.asset(name)


def test_unknown_and_undecodable_assets_are_refused(
    resources: LocalResources, assets: Path
) -> None:
    (assets / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (assets / "notes.txt").write_text("hello")
    for name, message in [
        ("missing.png", "unknown asset"),
        ("broken.png", "not a PNG"),
        ("notes.txt", "not a PNG"),
    ]:
        with pytest.raises(FieldError, match=message):
            resources.asset(name)


def test_truncated_image_is_refused(resources: LocalResources, assets: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    (assets / "cut.png").write_bytes(buffer.getvalue()[:-30])
    with pytest.raises(FieldError, match="cannot be decoded"):
        resources.asset("cut.png")


def test_oversized_assets_are_refused(assets: Path) -> None:
    save_png(assets / "big.png", (200, 200), ("#ff0000", "#00ff00"))
    few_pixels = LocalResources([assets], {}, max_pixels=100 * 100)
    with pytest.raises(FieldError, match="megapixels"):
        few_pixels.asset("big.png")
    few_bytes = LocalResources([assets], {}, max_bytes=10)
    with pytest.raises(FieldError, match="larger than"):
        few_bytes.asset("big.png")


# Field parsing


@pytest.mark.parametrize(
    ("kind", "fields", "field", "message"),
    [
        ("fill", {"color": "#zz"}, "color", 'not a colour: "#zz"'),
        ("fill", {"color": 12}, "color", "not a string"),
        ("fill", {}, "color", "is required"),
        ("fill", {"color": "red", "colour": "blue"}, "colour", "unknown field"),
        ("rect", {"box": [0, 0, 10], "color": "red"}, "box", "[x, y, width, height]"),
        ("rect", {"box": [0, 0, 0, 10], "color": "red"}, "box", "width and height"),
        ("rect", {"box": [0, 0, 1.5, 10], "color": "red"}, "box", "whole number"),
        ("rect", {"box": [True, 0, 5, 10], "color": "red"}, "box", "whole number"),
        ("rect", {"box": "0,0,5,5", "color": "red"}, "box", "[x, y, width, height]"),
        ("rect", {"box": [0, 0, 5, 5], "color": "red", "radius": -1}, "radius", "between"),
        ("text", {"box": [0, 0, 5, 5], "text": "   "}, "text", "is empty"),
        ("text", {"box": [0, 0, 5, 5]}, "text", "is required"),
        ("text", {"text": "Hi"}, "box", "is required"),
        ("text", {"box": [0, 0, 5, 5], "text": "Hi", "size": 500}, "size", "between 4 and 400"),
        ("text", {"box": [0, 0, 5, 5], "text": "Hi", "size": True}, "size", "whole number"),
        ("text", {"box": [0, 0, 5, 5], "text": "Hi", "align": "justify"}, "align", "one of"),
        ("text", {"box": [0, 0, 5, 5], "text": "Hi", "font": "comic"}, "font", "unknown font"),
        ("text", {"box": [0, 0, 5, 5], "text": "Hi", "line_height": 5}, "line_height", "between"),
        ("image", {"box": [0, 0, 5, 5], "src": "../x.png"}, "src", "inside the assets"),
    ],
)
def test_bad_fields_name_the_field(
    resources: LocalResources, kind: str, fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(LayerError) as caught:
        parse_layer(LAYER_KINDS[kind], fields, resources)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_text_layer_defaults_and_parsed_values(make: MakeLayer) -> None:
    layer = make(
        "text", type="text", box=[0, 0, 100, 40.0], text="  Hi  ", size=30, font="Roboto-Bold"
    )
    assert isinstance(layer, TextLayer)
    assert layer.box == (0, 0, 100, 40)
    assert layer.text == "Hi"
    assert layer.min_size == 15  # half the size by default
    assert layer.color == (0, 0, 0, 255)
    assert layer.font.name == "roboto-bold"
    assert layer.font.primary.name == "roboto-bold"
    assert len(layer.font.faces) > 10  # the fallback chain follows
    assert (layer.align, layer.valign, layer.fit, layer.line_height) == (
        "left",
        "top",
        "shrink",
        1.2,
    )

    def min_size(**fields: object) -> int:
        small = make("text", box=[0, 0, 9, 9], text="Hi", **fields)
        assert isinstance(small, TextLayer)
        return small.min_size

    assert min_size(size=10) == 8
    assert min_size(size=6) == 6
    assert min_size(min_size=50) == 32


def test_every_kind_lists_its_fields() -> None:
    assert set(LAYER_KINDS) == {
        "fill",
        "rect",
        "text",
        "image",
        "countdown",
        "progress",
        "qr",
        "barcode",
    }
    for name, kind in LAYER_KINDS.items():
        assert kind.name == name
        assert kind.needs_clock == (name == "countdown")
        assert all(not f.required or f.default is None for f in kind.fields)
    templated = {f.name for f in LAYER_KINDS["text"].fields if f.templated}
    assert {"text", "color", "font"} <= templated
    assert "box" not in templated


def test_builtin_fonts() -> None:
    fonts = builtin_fonts()
    assert {"sans", "sans-bold", "roboto-regular", "roboto-bold", "roboto-italic"} <= set(fonts)
    assert fonts["sans"] == fonts["roboto-regular"]
    assert all(path.is_file() for path in fonts.values())


# Deadline


def test_a_past_deadline_stops_the_render(make: MakeLayer) -> None:
    plan = RenderPlan(
        300, 120, 1, "png", (make("fill", color=WHITE), make("text", box=TEXT_BOX, text="Hi"))
    )
    with pytest.raises(RenderDeadlineExceeded):
        render(plan, deadline=time.monotonic() - 1)
    assert render(plan, deadline=time.monotonic() + 60).startswith(b"\x89PNG")


def test_the_deadline_is_checked_between_layers(
    make: MakeLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow layer uses up the time: the layers after it are not drawn."""
    clock = [0.0]
    drawn: list[Layer] = []
    fill = LAYER_KINDS["fill"]

    class SlowFill:
        name, fields, make, needs_clock = fill.name, fill.fields, fill.make, False

        def draw(self, canvas: Image.Image, layer: Layer, scale: int, now: object) -> None:
            drawn.append(layer)
            clock[0] += 1.0

    monkeypatch.setitem(LAYER_KINDS, "fill", SlowFill())
    monkeypatch.setattr(render_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    layers = tuple(make("fill", color=c) for c in ("red", "green", "blue"))
    with pytest.raises(RenderDeadlineExceeded):
        render(RenderPlan(10, 10, 1, "png", layers), deadline=0.5)
    assert drawn == [layers[0]]


def test_picture_cache_drops_the_least_recently_used_beyond_its_bytes() -> None:
    from renderers.picture_cache import PictureCache, image_bytes

    cache = PictureCache[Image.Image](
        max_bytes=2 * 10 * 10 * 4, size_of=image_bytes
    )  # room for two 10 x 10 pictures
    pictures = {name: Image.new("RGBA", (10, 10)) for name in "abc"}
    cache.put("a", pictures["a"])
    cache.put("b", pictures["b"])
    assert cache.get("a") is pictures["a"]  # now "b" is the least recently used
    cache.put("c", pictures["c"])
    assert cache.get("b") is None
    assert cache.get("a") is pictures["a"]
    assert cache.get("c") is pictures["c"]
    cache.put("huge", Image.new("RGBA", (100, 100)))  # larger than the whole cache
    assert cache.get("huge") is None
    assert cache.get("a") is pictures["a"]
