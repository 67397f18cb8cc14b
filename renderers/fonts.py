"""Fonts: the faces a block may name, and the fallback stack behind every text.

A face is a font file (and a face index, for collections) known by a name. A block's
`font` names one or more faces; behind them comes the same built-in fallback chain for
every block, so that a recipient's name in any script is drawn with real glyphs: the
first face of the stack that has a character draws it (see `renderers.runs`).

Faces come from three places, in rising priority: the system's fonts as fontconfig
lists them, the built-in ones (the files in `renderers/fontfiles/`, shipped in the package
with their licences and pinned by hash in its SHA256SUMS), and a fonts directory
(`ATOPEN_FONTS_DIR`), whose files win, so an operator can replace any face.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FONT = "sans"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
# The built-in font files, beside this module (see docs/fonts.md for where they come from).
FONT_FILES_DIR = Path(__file__).resolve().parent / "fontfiles"
# fc-list runs once at startup; a fontconfig that hangs must not stop the service.
_FC_LIST_TIMEOUT_S = 10.0


class FontError(Exception):
    """A font the configuration needs is missing or unreadable (a startup error)."""


@dataclass(frozen=True, slots=True)
class FontFace:
    """A font file known by a name."""

    name: str
    path: str
    index: int = 0  # the face in a collection (.ttc)
    weight: int | None = None  # drawn at this weight, if the font has a weight axis


@dataclass(frozen=True, slots=True)
class FontStack:
    """The faces a text is drawn with, in order of preference: `name` is how a block wrote it."""

    name: str
    # Left out of the repr, which keys the render cache: within one deployment the name
    # decides the faces, and spelling out every fallback face cost more than a render hit.
    faces: tuple[FontFace, ...] = field(repr=False)

    @property
    def primary(self) -> FontFace:
        """The face whose metrics set the line height and baseline."""
        return self.faces[0]


@dataclass(frozen=True, slots=True)
class _Bundled:
    """A face of the fallback chain: its file, relative to FONT_FILES_DIR."""

    name: str
    file: str


# The fallback chain: after the faces a block names, each character is drawn by the
# first of these that has it. Noto covers what Roboto lacks (more Latin, Greek and
# Cyrillic), then the scripts by how many email readers use them; Noto Sans Symbols and
# the monochrome Noto Emoji come last, so that a colour emoji font, when there is one,
# goes before them.
_FALLBACK: tuple[_Bundled, ...] = (
    *(
        _Bundled(f"noto-sans-{script}".removesuffix("-"), f"noto/{file}")
        for script, file in (
            ("", "NotoSans[wght].ttf"),
            ("arabic", "NotoSansArabic[wght].ttf"),
            ("hebrew", "NotoSansHebrew[wght].ttf"),
            ("devanagari", "NotoSansDevanagari[wght].ttf"),
            ("bengali", "NotoSansBengali[wght].ttf"),
            ("thai", "NotoSansThai[wght].ttf"),
            ("tamil", "NotoSansTamil[wght].ttf"),
            ("telugu", "NotoSansTelugu[wght].ttf"),
            ("gujarati", "NotoSansGujarati[wght].ttf"),
            ("kannada", "NotoSansKannada[wght].ttf"),
            ("malayalam", "NotoSansMalayalam[wght].ttf"),
            ("gurmukhi", "NotoSansGurmukhi[wght].ttf"),
            ("oriya", "NotoSansOriya[wght].ttf"),
            ("sinhala", "NotoSansSinhala[wght].ttf"),
            ("khmer", "NotoSansKhmer[wght].ttf"),
            ("lao", "NotoSansLao[wght].ttf"),
            ("myanmar", "NotoSansMyanmar[wght].ttf"),
            ("armenian", "NotoSansArmenian[wght].ttf"),
            ("georgian", "NotoSansGeorgian[wght].ttf"),
            ("ethiopic", "NotoSansEthiopic[wght].ttf"),
        )
    ),
    _Bundled("noto-sans-cjk", "noto_cjk/NotoSansCJKjp-Regular.otf"),
    _Bundled("noto-sans-symbols", "noto/NotoSansSymbols[wght].ttf"),
)
_MONOCHROME_EMOJI = _Bundled("noto-emoji", "noto/NotoEmoji[wght].ttf")


def builtin_fonts() -> dict[str, Path]:
    """The built-in Roboto family, plus `sans` and `sans-bold`."""
    root = FONT_FILES_DIR / "roboto"
    fonts = {path.stem.lower(): path for path in sorted(root.glob("Roboto-*.ttf"))}
    if "roboto-regular" not in fonts or "roboto-bold" not in fonts:
        raise FontError(f"the built-in Roboto fonts are missing from {root}: reinstall atopen")
    fonts[DEFAULT_FONT] = fonts["roboto-regular"]
    fonts["sans-bold"] = fonts["roboto-bold"]
    return fonts


def bundled_fonts() -> dict[str, FontFace]:
    """Every face of the fallback chain by name (also nameable in a block's `font`).

    Raises FontError naming the first face whose file is missing: the service must
    not start without them, or some recipients would get boxes for names.
    """
    faces: dict[str, FontFace] = {}
    for bundled in (*_FALLBACK, _MONOCHROME_EMOJI):
        path = FONT_FILES_DIR / bundled.file
        if not path.is_file():
            raise FontError(f"font {bundled.name!r} is missing: no {path}; reinstall atopen")
        faces[bundled.name] = FontFace(bundled.name, str(path))
    return faces


def fallback_chain(
    fonts: Mapping[str, FontFace], colour_emoji: Iterable[FontFace]
) -> tuple[FontFace, ...]:
    """The faces behind every stack: the bundled chain, colour emoji, then monochrome emoji."""
    chain = [fonts[bundled.name] for bundled in _FALLBACK]
    chain.extend(colour_emoji)
    chain.append(fonts[_MONOCHROME_EMOJI.name])
    return tuple(chain)


def fonts_in_directory(directory: Path) -> dict[str, FontFace]:
    """The font files in `directory` (`ATOPEN_FONTS_DIR`), named by file name without suffix.

    `Brand-Bold.otf` is the font `brand-bold` (a collection's first face). Raises
    FontError if the directory is missing. Files are opened when a block names them, so
    a file that is no font is refused then, naming it.
    """
    if not directory.is_dir():
        raise FontError(f"the fonts directory {str(directory)!r} does not exist")
    faces: dict[str, FontFace] = {}
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in FONT_SUFFIXES and path.is_file():
            name = path.stem.lower()
            faces[name] = FontFace(name, str(path.resolve()))
    return faces


def system_fonts() -> dict[str, FontFace]:
    """The system's fonts, as fontconfig lists them, named by PostScript name in lower case.

    `DejaVuSans-Bold` is `dejavusans-bold`. Empty where fontconfig is not installed.
    """
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return {}
    try:
        listing = subprocess.run(  # noqa: S603 - a fixed command, no shell, no user input
            [fc_list, "--format", "%{file}\t%{index}\t%{postscriptname}\n"],
            capture_output=True,
            text=True,
            timeout=_FC_LIST_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return _parse_fc_list(listing)


def _parse_fc_list(listing: str) -> dict[str, FontFace]:
    faces: dict[str, FontFace] = {}
    for line in sorted(listing.splitlines()):
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2] or not parts[1].isdigit():
            continue
        path, index, postscript = parts
        if Path(path).suffix.lower() not in FONT_SUFFIXES:
            continue  # Type 1 and bitmap formats: not for email images
        name = postscript.lower()
        faces.setdefault(name, FontFace(name, path, int(index)))
    return faces


def available_fonts(fonts_dir: Path | None = None, *, system: bool = True) -> dict[str, FontFace]:
    """Every font a block may name: system fonts, then the built-in ones, then `fonts_dir`'s.

    Later sources win a name: a file in the fonts directory replaces a built-in face.
    Raises FontError if a built-in face is missing or `fonts_dir` does not exist.
    """
    fonts: dict[str, FontFace] = dict(system_fonts()) if system else {}
    fonts.update(bundled_fonts())
    fonts.update({name: FontFace(name, str(path)) for name, path in builtin_fonts().items()})
    if fonts_dir is not None:
        fonts.update(fonts_in_directory(fonts_dir))
    return fonts
