"""Fonts: stacks with per-glyph fallback, every script drawn with real glyphs, font sources.

"Not tofu" is checked twice: the face chosen for each character has it in its cmap, and
what that face draws for it differs from what it draws for a character it lacks (its
.notdef box).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from fontTools.colorLib.builder import buildCOLR, buildCPAL
from fontTools.fontBuilder import FontBuilder
from fontTools.misc import sstruct
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import newTable
from fontTools.ttLib.tables import C_B_D_T_, E_B_L_C_
from fontTools.ttLib.tables.BitmapGlyphMetrics import SmallGlyphMetrics
from fontTools.ttLib.tables.E_B_L_C_ import sbitLineMetricsFormat
from PIL import Image, ImageChops, ImageDraw

from renderers import fonts as fonts_module
from renderers import runs as runs_module
from renderers.bidi import display_order, embedding_levels, is_rtl
from renderers.fields import FieldError
from renderers.fonts import (
    FontError,
    FontFace,
    _parse_fc_list,
    available_fonts,
    builtin_fonts,
    bundled_fonts,
    fonts_in_directory,
)
from renderers.glyphs import RAQM, face_info, load_font
from renderers.layers import LAYER_KINDS
from renderers.layers.base import LayerError, parse_layer
from renderers.plan import RenderPlan
from renderers.render import render
from renderers.resources import LocalResources, default_fallback, default_stack
from renderers.runs import Run, clusters, itemize, line_runs, shaped

SCRIPTS = {
    "latin": "Małgorzata Françoise Ærøskøbing Ğüşçö",
    "cyrillic": "Здравствуйте, Ёлка",
    "greek": "Καλημέρα Ελένη",
    "chinese": "您好\uff0c欢迎光临",
    "japanese": "こんにちは、カタカナ",
    "korean": "안녕하세요",
    "arabic": "مرحبا بك",
    "hebrew": "שלום עולם",
    "devanagari": "नमस्ते दुनिया",
    "thai": "สวัสดีครับ",
    "emoji": "🎉👍🏽🇵🇱❤️",
}
NOT_IN_ANY_FONT = "\U0010fffd"  # a private-use character: every face draws its .notdef


@pytest.fixture(scope="module")
def resources() -> LocalResources:
    return LocalResources([], builtin_fonts())


def ink(face: FontFace, text: str, px: int = 48) -> Image.Image:
    """What `face` alone draws for `text`, as a coverage mask."""
    font = load_font(face, px)
    mask = Image.new("L", (px * 4 * max(1, len(text)), px * 3), 0)
    ImageDraw.Draw(mask).text((px, px * 2), text, font=font, fill=255, anchor="ls")
    return mask


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_character_goes_to_a_face_that_has_it(script: str) -> None:
    stack = default_stack()
    text = SCRIPTS[script]
    runs = itemize(text, stack)
    # Nothing visible is dropped (a variation selector the emoji face lacks may be).
    assert "".join(run.text for run in runs).replace("\ufe0f", "") == text.replace("\ufe0f", "")
    for run in runs:
        characters = face_info(run.face).characters
        visible = [c for c in run.text if c not in "\ufe0f\u200d"]
        assert all(ord(c) in characters for c in visible), (script, run)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_no_character_is_drawn_as_the_notdef_box(script: str) -> None:
    for run in itemize(SCRIPTS[script], default_stack()):
        box = ink(run.face, NOT_IN_ANY_FONT)
        for cluster in clusters(run.text):
            if cluster.isspace():
                continue
            drawn = ink(run.face, cluster)
            assert drawn.getbbox() is not None, (script, cluster)
            assert ImageChops.difference(drawn, box).getbbox() is not None, (script, cluster)


def test_the_roboto_face_draws_latin_and_the_fallback_the_rest() -> None:
    names = {run.face.name for run in itemize("Anna 你好 مرحبا", default_stack())}
    assert names == {"sans", "noto-sans-cjk", "noto-sans-arabic"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_renders_ink_in_its_box(resources: LocalResources, script: str) -> None:
    layer = parse_layer(
        LAYER_KINDS["text"],
        {"box": [10, 10, 580, 80], "text": SCRIPTS[script], "size": 40},
        resources,
    )
    image = Image.open(io.BytesIO(render(RenderPlan(600, 100, 1, "png", (layer,)))))
    bbox = image.getbbox()
    assert bbox is not None
    assert bbox[0] >= 10
    assert bbox[2] <= 590


def test_spaces_and_punctuation_stay_in_the_run_they_are_in() -> None:
    runs = itemize("مرحبا بك، يا آنا", default_stack())
    assert len(runs) == 1
    assert runs[0].face.name == "noto-sans-arabic"


def test_marks_and_emoji_sequences_stay_whole() -> None:
    assert clusters("e\u0301") == ["e\u0301"]
    assert clusters("👍🏽") == ["👍🏽"]
    assert clusters("🇵🇱🇩🇪") == ["🇵🇱", "🇩🇪"]
    assert clusters("👩\u200d💻x") == ["👩\u200d💻", "x"]


def test_a_character_no_font_has_is_refused_not_boxed(resources: LocalResources) -> None:
    only_roboto = LocalResources([], builtin_fonts(), fallback=())
    with pytest.raises(LayerError) as caught:
        parse_layer(
            LAYER_KINDS["text"],
            {"box": [0, 0, 50, 50], "text": "Hi 你好", "font": "sans"},
            only_roboto,
        )
    assert caught.value.field == "text"
    assert "U+4F60" in caught.value.message
    # The full stack has it.
    parse_layer(LAYER_KINDS["text"], {"box": [0, 0, 50, 50], "text": "Hi 你好"}, resources)


def test_invisible_characters_no_face_has_are_left_out() -> None:
    runs = itemize("A\u200bB", LocalResources([], builtin_fonts(), fallback=()).font("sans"))
    assert "".join(run.text for run in runs) in ("AB", "A\u200bB")


# Bidirectional text


def test_paragraph_direction_comes_from_the_first_strong_character() -> None:
    assert is_rtl("שלום Anna")
    assert not is_rtl("Anna שלום")
    assert is_rtl("123 مرحبا")
    assert not is_rtl("123 !")


def test_levels_and_display_order_of_mixed_text() -> None:
    text = "Hi שלום!"
    levels = embedding_levels(text, rtl=False)
    assert levels == [0, 0, 0, 1, 1, 1, 1, 0]
    order = display_order(levels)
    assert "".join(text[i] for i in order) == "Hi םולש!"


def test_numbers_in_right_to_left_text_read_left_to_right() -> None:
    text = "מחיר 120"
    levels = embedding_levels(text, rtl=True)
    assert levels[-3:] == [2, 2, 2]
    shown = "".join(text[i] for i in display_order(levels))
    assert shown == "120 ריחמ"


def test_line_runs_put_a_hebrew_name_in_display_order() -> None:
    runs = line_runs("שלום Anna!", default_stack(), rtl=True)
    # Read from the right: the Hebrew word (with the space after it), the name, then "!".
    assert [run.text for run in runs] == ["!", "Anna", "שלום "]
    assert [run.rtl for run in runs] == [True, False, True]


@pytest.mark.skipif(not RAQM, reason="Arabic shaping needs Pillow's RAQM layout (libfribidi)")
def test_arabic_is_shaped_into_joined_forms() -> None:
    face = next(run.face for run in itemize("مرحبا", default_stack()))
    font = load_font(face, 40)
    joined = font.getlength("مرحبا", direction="rtl")
    isolated = sum(font.getlength(letter) for letter in "مرحبا")
    assert abs(joined - isolated) > 2


def test_without_raqm_right_to_left_runs_are_reversed_by_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    face = default_stack().primary
    monkeypatch.setattr(runs_module, "RAQM", False)
    assert shaped(Run("אבג", face, rtl=True)) == ("גבא", None)
    assert shaped(Run("abc", face)) == ("abc", None)
    monkeypatch.setattr(runs_module, "RAQM", True)
    assert shaped(Run("אבג", face, rtl=True)) == ("אבג", "rtl")


# Colour emoji


def make_colour_font(path: Path) -> FontFace:
    """A tiny COLR font whose only glyph, for U+1F600, is a red square."""
    builder = FontBuilder(1000, isTTF=True)
    names = [".notdef", "smile", "square"]
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({0x1F600: "smile"})
    pen = TTGlyphPen(None)
    pen.moveTo((100, 0))
    pen.lineTo((100, 700))
    pen.lineTo((900, 700))
    pen.lineTo((900, 0))
    pen.closePath()
    square = pen.glyph()
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "smile": square, "square": square})
    builder.setupHorizontalMetrics({name: (1000, 0) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "Test Colour Emoji", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.font["COLR"] = buildCOLR({"smile": [("square", 0)]})
    builder.font["CPAL"] = buildCPAL([[(1.0, 0.0, 0.0, 1.0)]])
    builder.save(str(path))
    return FontFace("test-colour-emoji", str(path))


def without_colour_faces() -> tuple[FontFace, ...]:
    """The fallback chain without the system's colour emoji fonts, if it has any."""
    return tuple(face for face in default_fallback() if not face_info(face).colour)


def test_a_colour_emoji_font_draws_in_its_own_colours(tmp_path: Path) -> None:
    colour = make_colour_font(tmp_path / "colour.ttf")
    assert face_info(colour).colour
    fallback = (*without_colour_faces()[:-1], colour, without_colour_faces()[-1])
    resources = LocalResources([], builtin_fonts(), fallback=fallback)
    layer = parse_layer(
        LAYER_KINDS["text"],
        {"box": [0, 0, 200, 60], "text": "Hi 😀", "size": 40, "color": "#000", "font": "sans"},
        resources,
    )
    image = Image.open(io.BytesIO(render(RenderPlan(200, 60, 1, "png", (layer,))))).convert("RGBA")
    colours = {colour for _, colour in image.getcolors(100_000) or []}
    assert (255, 0, 0, 255) in colours  # the emoji's own red
    assert (0, 0, 0, 255) in colours  # the text's black


def test_emoji_presentation_prefers_a_colour_face(tmp_path: Path) -> None:
    colour = make_colour_font(tmp_path / "colour.ttf")
    resources = LocalResources([], builtin_fonts(), fallback=(*without_colour_faces(), colour))
    stack = resources.font("sans")
    assert itemize("😀\ufe0f", stack)[0].face == colour
    assert itemize("😀", stack)[0].face.name != colour.name  # a face before it has the emoji


BITMAP_STRIKE_PX = 109  # the one size of Noto Color Emoji's bitmaps


def make_bitmap_emoji_font(path: Path) -> FontFace:
    """A tiny CBDT/CBLC font whose only glyph, for U+1F389, is a colour bitmap.

    Like Noto Color Emoji it has no outlines, only PNGs in one strike of
    BITMAP_STRIKE_PX pixels; the PNG is a hue and saturation gradient: many colours.
    """
    side, ascender, upem = 100, 88, 2048
    hue = Image.linear_gradient("L").rotate(90).resize((side, side))
    saturation = Image.linear_gradient("L").resize((side, side))
    bright = Image.new("L", (side, side), 255)
    picture = Image.merge("HSV", (hue, saturation, bright)).convert("RGBA")
    png = io.BytesIO()
    picture.save(png, "PNG")

    glyph = C_B_D_T_.cbdt_bitmap_format_17(None, None)
    glyph.metrics = SmallGlyphMetrics()
    glyph.metrics.width = glyph.metrics.height = side
    glyph.metrics.BearingX = (BITMAP_STRIKE_PX - side) // 2
    glyph.metrics.BearingY = ascender
    glyph.metrics.Advance = BITMAP_STRIKE_PX
    glyph.imageData = png.getvalue()
    location = E_B_L_C_.eblc_index_sub_table_1(None, None)
    location.indexFormat, location.imageFormat, location.names = 1, 17, ["party"]
    line = E_B_L_C_.SbitLineMetrics()
    for name in sstruct.getformat(sbitLineMetricsFormat)[1]:
        setattr(line, name, 0)
    line.ascender = line.maxBeforeBL = ascender
    line.descender = line.minAfterBL = ascender - BITMAP_STRIKE_PX
    line.widthMax = BITMAP_STRIKE_PX
    strike = E_B_L_C_.Strike()
    strike.indexSubTables = [location]
    sizes = strike.bitmapSizeTable
    sizes.hori = sizes.vert = line
    sizes.ppemX = sizes.ppemY = BITMAP_STRIKE_PX
    sizes.colorRef, sizes.bitDepth, sizes.flags = 0, 32, 1  # 32-bit colour, horizontal

    ascent = round(upem * ascender / BITMAP_STRIKE_PX)
    builder = FontBuilder(upem, isTTF=True)  # no glyf table: bitmaps only
    builder.setupGlyphOrder([".notdef", "party"])
    builder.setupCharacterMap({0x1F389: "party"})
    builder.setupHorizontalMetrics({".notdef": (upem, 0), "party": (upem, 0)})
    builder.setupHorizontalHeader(ascent=ascent, descent=ascent - upem)
    builder.setupNameTable({"familyName": "Test Bitmap Emoji", "styleName": "Regular"})
    builder.setupOS2(
        sTypoAscender=ascent,
        sTypoDescender=ascent - upem,
        usWinAscent=ascent,
        usWinDescent=upem - ascent,
    )
    builder.setupPost()
    builder.setupMaxp()
    builder.font["CBDT"] = cbdt = newTable("CBDT")
    cbdt.version, cbdt.strikeData = 3.0, [{"party": glyph}]
    builder.font["CBLC"] = cblc = newTable("CBLC")
    cblc.version, cblc.strikes = 3.0, [strike]
    builder.save(str(path))
    return FontFace("test-bitmap-emoji", str(path))


def test_a_bitmap_emoji_font_is_scaled_to_the_text_size(tmp_path: Path) -> None:
    bitmap = make_bitmap_emoji_font(tmp_path / "bitmap.ttf")
    assert face_info(bitmap).colour
    assert face_info(bitmap).strike == BITMAP_STRIKE_PX
    fallback = (*without_colour_faces()[:-1], bitmap, without_colour_faces()[-1])
    resources = LocalResources([], builtin_fonts(), fallback=fallback)
    assert itemize("🎉", resources.font("sans"))[0].face == bitmap
    for size in (20, 60):
        fields = {"box": [0, 0, 200, 100], "text": "🎉", "size": size, "font": "sans"}
        layer = parse_layer(LAYER_KINDS["text"], fields, resources)
        image = Image.open(io.BytesIO(render(RenderPlan(200, 100, 1, "png", (layer,)))))
        bbox = image.getbbox()
        assert bbox is not None
        assert abs((bbox[2] - bbox[0]) - size) <= size * 0.4
        assert len(image.convert("RGB").getcolors(100_000) or []) > 20  # in colour


# Where fonts come from


def test_bundled_faces_exist_and_a_missing_one_names_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faces = bundled_fonts()
    assert {"noto-sans", "noto-sans-arabic", "noto-sans-cjk", "noto-emoji"} <= set(faces)
    assert all(Path(face.path).is_file() for face in faces.values())
    missing = fonts_module._Bundled("noto-sans-klingon", "noto/NotoSansKlingon[wght].ttf")
    monkeypatch.setattr(fonts_module, "_FALLBACK", (*fonts_module._FALLBACK, missing))
    with pytest.raises(FontError, match=r"noto-sans-klingon.*NotoSansKlingon"):
        bundled_fonts()


def test_fonts_directory_names_files_and_wins_over_builtins(tmp_path: Path) -> None:
    roboto_bold = builtin_fonts()["roboto-bold"]
    shutil.copy(roboto_bold, tmp_path / "Brand-Bold.ttf")
    (tmp_path / "notes.txt").write_text("not a font")
    found = fonts_in_directory(tmp_path)
    assert set(found) == {"brand-bold"}
    fonts = available_fonts(tmp_path, system=False)
    assert fonts["brand-bold"].path == str((tmp_path / "Brand-Bold.ttf").resolve())
    resources = LocalResources([], fonts)
    stack = resources.font("Brand-Bold, sans")
    assert [face.name for face in stack.faces[:2]] == ["brand-bold", "sans"]
    assert stack.faces[2].name == "noto-sans"
    assert stack.faces[2].weight == 700  # the fallback follows the named face's weight


def test_a_missing_fonts_directory_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="does not exist"):
        available_fonts(tmp_path / "missing", system=False)


def test_a_broken_font_file_is_refused_when_named(tmp_path: Path) -> None:
    (tmp_path / "broken.ttf").write_bytes(b"not a font at all")
    resources = LocalResources([], available_fonts(tmp_path, system=False))
    with pytest.raises(FieldError, match="broken"):
        resources.font("broken")


def test_unknown_font_names_are_refused_with_suggestions(resources: LocalResources) -> None:
    with pytest.raises(FieldError, match=r'unknown font: "comic".*roboto-bold'):
        resources.font("comic")
    with pytest.raises(FieldError, match="unknown font"):
        resources.font("sans, comic")


def test_fontconfig_listing_is_parsed() -> None:
    listing = (
        "/usr/share/fonts/DejaVuSans-Bold.ttf\t0\tDejaVuSans-Bold\n"
        "/usr/share/fonts/NotoSansCJK.ttc\t2\tNotoSansCJKkr-Regular\n"
        "/usr/share/fonts/old.pfb\t0\tOldType1\n"
        "garbage line\n"
    )
    faces = _parse_fc_list(listing)
    assert set(faces) == {"dejavusans-bold", "notosanscjkkr-regular"}
    assert faces["notosanscjkkr-regular"].index == 2
