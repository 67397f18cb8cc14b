"""Golden images: each layer kind and script, rendered and compared with `tests/golden/`.

Compared with a tolerance, not byte for byte: another Pillow or FreeType moves
anti-aliased edges a little, while a real regression (a missing glyph, a box, a shifted
layer) changes many pixels a lot. To accept new renderings after a deliberate change:

    UPDATE_GOLDENS=1 .venv/bin/pytest tests/renderers/test_golden.py

then look at the changed PNGs before committing them.

The fonts are the bundled ones only (no system fonts), so the images do not depend on
what the machine has installed.
"""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageChops, ImageSequence, ImageStat

from renderers.fonts import builtin_fonts, bundled_fonts, fallback_chain
from renderers.glyphs import RAQM
from renderers.layers import LAYER_KINDS
from renderers.layers.base import parse_layer
from renderers.plan import ImageFormat, Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"
NOW = datetime(2026, 12, 20, 10, 0, 7, tzinfo=ZoneInfo("Europe/Warsaw"))
# Mean difference per channel, and the share of pixels that may differ by more than 64.
MEAN_TOLERANCE = 2.5
FAR_TOLERANCE = 0.01
NEEDS_SHAPING = {"text-arabic", "text-devanagari", "text-mixed-rtl"}

Raw = dict[str, object]


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> LocalResources:
    assets = tmp_path_factory.mktemp("assets")
    picture = Image.new("RGB", (160, 100), "#e03131")
    picture.paste("#1971c2", (80, 0, 160, 100))
    picture.paste("#f08c00", (60, 30, 100, 70))
    picture.save(assets / "product.png")
    return LocalResources([assets], builtin_fonts(), fallback=fallback_chain(bundled_fonts(), []))


def text(content: str, **fields: object) -> Raw:
    return {
        "type": "text",
        "box": [16, 12, 568, 96],
        "text": content,
        "size": 40,
        "color": "#f8f9fa",
        "font": "sans",
        "valign": "middle",
        **fields,
    }


BACKGROUND: Raw = {"type": "fill", "color": "#1b1f3b"}
WHITE: Raw = {"type": "fill", "color": "#ffffff"}
BARCODES: list[Raw] = [
    {"type": "barcode", "box": [20, 20, 260, 80], "data": "SPRING10"},
    {
        "type": "barcode",
        "box": [320, 20, 260, 80],
        "data": "400638133393",
        "symbology": "ean13",
    },
]
CASES: dict[str, tuple[ImageFormat, int, list[Raw]]] = {
    "fill-rect": (
        "png",
        1,
        [
            {"type": "fill", "color": "#f1f3f5"},
            {"type": "rect", "box": [40, 20, 300, 80], "color": "#0b6e4f80", "radius": 24},
        ],
    ),
    "text-latin": ("png", 1, [BACKGROUND, text("Małgorzata, Françoise and Ærøskøbing")]),
    "text-cyrillic-greek": ("png", 1, [BACKGROUND, text("Здравствуйте, Ёлка · Καλημέρα Ελένη")]),
    "text-cjk": ("png", 1, [BACKGROUND, text("您好\uff0c欢迎光临 · こんにちは · 안녕하세요")]),
    "text-arabic": ("png", 1, [BACKGROUND, text("مرحبا بك يا آنا", align="start")]),
    "text-hebrew": ("png", 1, [BACKGROUND, text("שלום עולם", align="start")]),
    "text-mixed-rtl": ("png", 1, [BACKGROUND, text("שלום Anna! مرحبا 2026", align="start")]),
    "text-devanagari": ("png", 1, [BACKGROUND, text("नमस्ते दुनिया")]),
    "text-emoji": ("png", 1, [BACKGROUND, text("Party time 🎉👍🏽")]),
    "text-halo-upper-dpr2": (
        "png",
        2,
        [
            WHITE,
            text(
                "stay bright",
                color="#212529",
                stroke_width=3,
                stroke_color="#ffd43b",
                transform="upper",
                align="center",
            ),
        ],
    ),
    "text-wrap-ellipsis": (
        "png",
        1,
        [BACKGROUND, text("A very long announcement " * 6, size=28, min_size=24, max_lines=2)],
    ),
    "image-cover-rounded": (
        "png",
        2,
        [
            BACKGROUND,
            {
                "type": "image",
                "box": [20, 10, 200, 100],
                "src": "product.png",
                "fit": "cover",
                "radius": 18,
            },
        ],
    ),
    "countdown": (
        "png",
        1,
        [
            BACKGROUND,
            {
                "type": "countdown",
                "box": [20, 8, 560, 104],
                "until": "2026-12-24T18:00",
                "color": "#ffd43b",
                "lang": "de",
            },
        ],
    ),
    "countdown-gif": (
        "gif",
        1,
        [
            BACKGROUND,
            {
                "type": "countdown",
                "box": [20, 8, 560, 104],
                "until": "2026-12-20T10:01:00",
                "color": "#ffd43b",
                "frames": 60,
            },
        ],
    ),
    "progress": (
        "png",
        1,
        [
            BACKGROUND,
            {
                "type": "progress",
                "box": [40, 50, 520, 24],
                "value": "640",
                "max": 1000,
                "radius": 12,
            },
        ],
    ),
    "qr": (
        "png",
        1,
        [
            WHITE,
            {
                "type": "qr",
                "box": [240, 0, 120, 120],
                "data": "https://shop.example.com/c/SPRING10",
            },
        ],
    ),
    "barcode": ("png", 1, [WHITE, *BARCODES]),
    # The same, with the data printed below, at dpr 2.
    "barcode-printed": ("png", 2, [WHITE, *({**b, "human_readable": "below"} for b in BARCODES)]),
}


def layers_of(raw: list[Raw], resources: LocalResources) -> tuple[Layer, ...]:
    return tuple(parse_layer(LAYER_KINDS[str(r["type"])], r, resources) for r in raw)


def pictures(data: bytes) -> list[Image.Image]:
    """The image, or for a GIF its first and last frames (what Outlook shows, and the end)."""
    image = Image.open(io.BytesIO(data))
    frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    return [frames[0], frames[-1]] if len(frames) > 1 else frames


def strip(images: list[Image.Image]) -> Image.Image:
    """Images side by side, as one PNG to keep."""
    out = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)))
    left = 0
    for image in images:
        out.paste(image, (left, 0))
        left += image.width
    return out


def differs(got: Image.Image, want: Image.Image) -> str | None:
    if got.size != want.size:
        return f"size {got.size} != {want.size}"
    difference = ImageChops.difference(got, want)
    mean = max(ImageStat.Stat(difference).mean)
    far = sum(difference.convert("L").histogram()[65:]) / (got.width * got.height)
    if mean > MEAN_TOLERANCE or far > FAR_TOLERANCE:
        return f"mean difference {mean:.2f}, {far:.2%} of pixels far off"
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, resources: LocalResources) -> None:
    if name in NEEDS_SHAPING and not RAQM:
        pytest.skip("complex scripts need Pillow's RAQM layout (libfribidi) to match")
    fmt, dpr, raw = CASES[name]
    data = render(RenderPlan(600, 120, dpr, fmt, layers_of(raw, resources), now=NOW))
    got = strip(pictures(data))
    path = GOLDEN / f"{name}.png"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        got.save(path)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run make goldens")
    problem = differs(got, Image.open(path).convert("RGB"))
    assert problem is None, f"{name}: {problem} (see the module docstring to update)"


def test_every_layer_kind_has_a_golden() -> None:
    covered = {str(layer["type"]) for _, _, raw in CASES.values() for layer in raw}
    assert covered == set(LAYER_KINDS)


def test_the_comparison_catches_a_real_change(resources: LocalResources) -> None:
    def drawn(words: str) -> Image.Image:
        plan = RenderPlan(600, 120, 1, "png", layers_of([BACKGROUND, text(words)], resources))
        return pictures(render(plan))[0]

    assert differs(drawn("Małgorzata"), drawn("Małgorzata")) is None
    assert differs(drawn("Małgorzata"), drawn("Françoise")) is not None
