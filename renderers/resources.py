"""Fonts and image assets: finding them by name, decoding them once, keeping them in memory.

Rendering happens on every email open, so nothing here is read or decoded twice: decoded
assets are kept per file (and reloaded only when the file changes), and FreeType fonts
are kept per face and pixel size.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from PIL import Image, ImageFont, ImageOps, features

from renderers.fields import FieldError

DEFAULT_FONT = "sans"
MAX_ASSET_BYTES = 20 * 1024 * 1024
MAX_ASSET_PIXELS = 40_000_000
# Only the formats email images are made from: every other decoder is attack surface.
_ASSET_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
# RAQM shapes complex scripts (Arabic, Devanagari, ...) correctly; BASIC is the fallback.
_LAYOUT_ENGINE = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC


@dataclass(frozen=True, slots=True)
class FontFace:
    """A font file known by a name."""

    name: str
    path: str


@dataclass(frozen=True, slots=True)
class Asset:
    """A decoded image asset; equal (and hashed) by name and content digest.

    `image` is RGBA and shared by every render that uses the asset: never modify it.
    """

    name: str
    digest: str  # sha256 hex of the file bytes
    image: Image.Image = field(compare=False, repr=False)


def builtin_fonts() -> dict[str, Path]:
    """The Roboto family shipped with the `font_roboto` package, plus `sans` and `sans-bold`."""
    # The package is installed as plain files; FreeType opens fonts by path.
    root = Path(str(importlib.resources.files("font_roboto").joinpath("files")))
    fonts = {path.stem.lower(): path for path in sorted(root.glob("Roboto-*.ttf"))}
    fonts[DEFAULT_FONT] = fonts["roboto-regular"]
    fonts["sans-bold"] = fonts["roboto-bold"]
    return fonts


@functools.lru_cache(maxsize=256)
def load_font(face: FontFace, size_px: int) -> ImageFont.FreeTypeFont:
    """The FreeType font for `face` at `size_px` pixels, opened once and then reused."""
    # Sharing a FreeTypeFont between threads is safe only because Pillow holds the GIL
    # while it uses the face; a free-threaded build would need a lock per face.
    return ImageFont.truetype(face.path, size_px, layout_engine=_LAYOUT_ENGINE)


class LocalResources:
    """Fonts from a name → file mapping and assets from directories on this machine."""

    def __init__(
        self,
        assets_dirs: Sequence[Path],
        fonts: Mapping[str, Path],
        *,
        max_bytes: int = MAX_ASSET_BYTES,
        max_pixels: int = MAX_ASSET_PIXELS,
    ) -> None:
        self._dirs = tuple(Path(d).resolve() for d in assets_dirs)
        self._fonts: dict[str, FontFace] = {}
        for name, path in fonts.items():
            # A broken font is a configuration error: fail at start-up, not on an open.
            ImageFont.truetype(str(path), 12)
            self._fonts[name.lower()] = FontFace(name.lower(), str(path))
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._assets: dict[Path, tuple[tuple[int, int], Asset]] = {}

    def font(self, name: str) -> FontFace:
        face = self._fonts.get(name.strip().lower())
        if face is None:
            known = ", ".join(sorted(self._fonts))
            raise FieldError(f'unknown font: "{name}"; known fonts: {known}')
        return face

    def asset(self, name: str) -> Asset:
        relative = _relative_name(name)
        for root in self._dirs:
            try:
                resolved = (root / relative).resolve(strict=True)
            except (OSError, RuntimeError):  # absent here (or a symlink loop): try the next dir
                continue
            if not resolved.is_relative_to(root):
                raise FieldError(f'"{name}" points outside the assets directory')
            if resolved.is_file():
                return self._load(relative, resolved)
        raise FieldError(f'unknown asset: "{name}"')

    def _load(self, name: str, path: Path) -> Asset:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._assets.get(path)
        if cached is not None and cached[0] == version:
            asset = cached[1]
            # Two names may lead to one file (a symlink); each caller gets its own name.
            return asset if asset.name == name else replace(asset, name=name)
        if stat.st_size > self._max_bytes:
            raise FieldError(f'"{name}" is larger than {self._max_bytes // (1024 * 1024)} MB')
        data = path.read_bytes()
        asset = Asset(name, hashlib.sha256(data).hexdigest(), self._decode(name, data))
        self._assets[path] = (version, asset)
        return asset

    def _decode(self, name: str, data: bytes) -> Image.Image:
        try:
            source = Image.open(io.BytesIO(data), formats=_ASSET_FORMATS)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise FieldError(f'"{name}" is not a PNG, JPEG, GIF or WebP image') from None
        with source:
            if source.width * source.height > self._max_pixels:
                megapixels = self._max_pixels // 1_000_000
                raise FieldError(f'"{name}" has more than {megapixels} megapixels')
            try:
                # Phone photos are often stored sideways with an EXIF rotation tag.
                upright = ImageOps.exif_transpose(source)
                return upright.convert("RGBA")
            except (OSError, ValueError, SyntaxError, EOFError):
                raise FieldError(f'"{name}" cannot be decoded') from None


def _relative_name(name: str) -> str:
    """`name` as a path inside an assets directory, or FieldError if it could leave it."""
    cleaned = name.strip()
    if not cleaned or "\\" in cleaned or "\x00" in cleaned:
        raise FieldError(f'not an asset file name: "{name}"')
    path = PurePosixPath(cleaned)
    if path.is_absolute() or ".." in path.parts:
        raise FieldError(f'must be a file name inside the assets directory: "{name}"')
    return str(path)
