"""QR codes and barcodes: the drawn modules, read back from the pixels, are the symbol."""

from __future__ import annotations

import io

import pytest
import segno
from PIL import Image

from renderers.barcodes import BarcodeError, code128, ean13, ean13_check_digit
from renderers.layers import LAYER_KINDS
from renderers.layers.base import LayerError, parse_layer
from renderers.plan import Layer, RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, builtin_fonts

# Patterns from an independent encoder (python-barcode 0.16), without quiet zones.
SPRING10 = (
    "110100100001101110100011101110110110001011101100010001010111000110110100010001001110"
    "011010011101100110001010001100011101011"
)
DIGITS_123456 = "11010011100101100111001000101100011100010110100011011101100011101011"
EAN_4006381333931 = (
    "10100011010100111010111101111010001001011001101010100001010000101000010111010010000101"
    "100110101"
)


@pytest.fixture(scope="module")
def resources() -> LocalResources:
    return LocalResources([], builtin_fonts())


def make(resources: LocalResources, kind: str, **fields: object) -> Layer:
    return parse_layer(LAYER_KINDS[kind], fields, resources)


def drawn(layer: Layer, width: int, height: int, dpr: int = 1) -> Image.Image:
    """The layer drawn on a white background, as grey levels."""
    white = parse_layer(LAYER_KINDS["fill"], {"color": "#ffffff"}, LocalResources([], {}))
    data = render(RenderPlan(width, height, dpr, "png", (white, layer)))
    return Image.open(io.BytesIO(data)).convert("L")


def grey(image: Image.Image, x: int, y: int) -> float:
    """The level at (x, y) of a one-band (greyscale) image."""
    level = image.getpixel((x, y))
    assert isinstance(level, int | float)
    return level


def darkest(image: Image.Image) -> float:
    """The lowest level of a one-band (greyscale) image."""
    low, _ = image.getextrema()
    assert not isinstance(low, tuple)
    return low


def read_bars(image: Image.Image) -> str:
    """The modules of a barcode image, read along its middle row."""
    row = [grey(image, x, image.height // 2) for x in range(image.width)]
    dark = "".join("1" if v < 128 else "0" for v in row)
    start, end = dark.index("1"), dark.rindex("1") + 1
    bars = dark[start:end]
    runs = [len(run) for run in bars.replace("10", "1 0").replace("01", "0 1").split()]
    module = min(runs)
    return "".join(bars[i] for i in range(0, len(bars), module))


def test_code128_matches_an_independent_encoder() -> None:
    assert code128("SPRING10") == SPRING10
    assert code128("123456") == DIGITS_123456  # all digits: code set C


def test_ean13_matches_an_independent_encoder_and_checks_its_digit() -> None:
    assert ean13("400638133393") == EAN_4006381333931
    assert ean13("4006381333931") == EAN_4006381333931
    assert ean13_check_digit("590123412345") == 7
    with pytest.raises(BarcodeError, match="check digit"):
        ean13("4006381333932")
    with pytest.raises(BarcodeError, match="12 or 13 digits"):
        ean13("40063813339")


@pytest.mark.parametrize("dpr", [1, 2, 3])
def test_barcode_bars_read_back_from_the_pixels(resources: LocalResources, dpr: int) -> None:
    layer = make(resources, "barcode", box=[10, 10, 300, 60], data="SPRING10")
    assert read_bars(drawn(layer, 320, 80, dpr)) == SPRING10
    ean = make(resources, "barcode", box=[0, 0, 200, 50], data="400638133393", symbology="ean13")
    assert read_bars(drawn(ean, 200, 50, dpr)) == EAN_4006381333931


def bar_end(image: Image.Image, x: int) -> int:
    """Where the bar through the middle of column `x` ends, going down."""
    y = image.height // 2
    while y + 1 < image.height and grey(image, x, y + 1) < 128:
        y += 1
    return y


@pytest.mark.parametrize("dpr", [1, 2])
def test_an_ean13_with_its_digits_below_reads_the_same_and_its_guards_reach_down(
    resources: LocalResources, dpr: int
) -> None:
    fields = {"box": [0, 0, 240, 100], "data": "400638133393", "symbology": "ean13"}
    printed = drawn(make(resources, "barcode", human_readable="below", **fields), 240, 100, dpr)
    plain = drawn(make(resources, "barcode", **fields), 240, 100, dpr)
    assert read_bars(printed) == read_bars(plain) == EAN_4006381333931
    module = 240 * dpr // 113  # 11 + 95 + 7 modules with the quiet zones
    left = (240 * dpr - 113 * module) // 2

    def column(m: int) -> int:
        return left + m * module + module // 2

    guard = column(11)  # the start guard's first bar
    data = column(11 + 3 + EAN_4006381333931[3:].index("1") + 3)  # a bar of the first digit
    assert bar_end(plain, guard) == bar_end(plain, data) == 100 * dpr - 1
    assert bar_end(printed, data) < bar_end(printed, guard) < 100 * dpr - 1
    # The first digit is printed in the quiet zone left of the bars, which is otherwise blank.
    quiet = (0, 0, column(10), 100 * dpr)
    assert darkest(plain.crop(quiet)) == 255
    assert darkest(printed.crop(quiet)) < 128


def test_code128_text_is_printed_under_its_bars(resources: LocalResources) -> None:
    fields = {"box": [10, 10, 300, 80], "data": "SPRING10"}
    printed = drawn(make(resources, "barcode", human_readable="below", **fields), 320, 100)
    plain = drawn(make(resources, "barcode", **fields), 320, 100)
    assert read_bars(printed) == SPRING10
    band = (10, 75, 310, 90)  # under the shortened bars
    assert darkest(plain.crop(band)) < 128  # the bars, down to the box's bottom
    dark = [x for x in range(10, 310) if darkest(printed.crop((x, 80, x + 1, 90))) < 128]
    assert dark
    assert abs((min(dark) + max(dark)) / 2 - 160) <= 4  # centred under the bars


def test_barcode_errors_name_the_data_field(resources: LocalResources) -> None:
    for fields in (
        {"box": [0, 0, 300, 50], "data": "4006381333932", "symbology": "ean13"},
        {"box": [0, 0, 300, 50], "data": "Zürich"},
        {"box": [0, 0, 100, 50], "data": "SPRING10"},  # 143 modules: too narrow
    ):
        with pytest.raises(LayerError) as caught:
            make(resources, "barcode", **fields)
        assert caught.value.field == "data"


@pytest.mark.parametrize("dpr", [1, 3])
def test_qr_modules_read_back_from_the_pixels(resources: LocalResources, dpr: int) -> None:
    data = "https://shop.example.com/c/SPRING10"
    layer = make(resources, "qr", box=[20, 10, 120, 120], data=data, color="#102030")
    image = drawn(layer, 160, 140, dpr)
    expected = segno.make(data, error="m", micro=False).matrix
    count = len(expected)
    module = (120 * dpr) // (count + 8)
    left = 20 * dpr + (120 * dpr - module * (count + 8)) // 2 + 4 * module
    top = 10 * dpr + (120 * dpr - module * (count + 8)) // 2 + 4 * module
    read = [
        [
            int(grey(image, left + c * module + module // 2, top + r * module + module // 2) < 128)
            for c in range(count)
        ]
        for r in range(count)
    ]
    assert read == [list(row) for row in expected]
    assert grey(image, left - 2 * module, top) == 255  # the quiet zone is light


def test_qr_too_large_for_its_box_is_refused(resources: LocalResources) -> None:
    with pytest.raises(LayerError) as caught:
        make(resources, "qr", box=[0, 0, 30, 30], data="x" * 200)
    assert caught.value.field == "data"
    assert "at least" in caught.value.message
