"""Fonts and image assets by name: what a block's `font` and `src` fields resolve to.

Rendering happens on every email open, so nothing here is read or decoded twice: decoded
assets are kept per file (and reloaded only when the file changes), font stacks per
name. Remote images (`https://` sources) are not fetched here: the server fetches them
before rendering (`server.opens.remote_images`) and resolves them through its own Resources.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps

from renderers.fields import FieldError, is_remote, remote_url
from renderers.fonts import (
    DEFAULT_FONT,
    FontError,
    FontFace,
    FontStack,
    builtin_fonts,
    bundled_fonts,
    fallback_chain,
    system_fonts,
)
from renderers.glyphs import face_info, load_font

__all__ = [
    "DEFAULT_FONT",
    "MAX_ASSET_BYTES",
    "MAX_ASSET_PIXELS",
    "Asset",
    "FontFace",
    "FontStack",
    "LocalResources",
    "builtin_fonts",
    "decode_image",
    "default_fallback",
    "default_stack",
]

MAX_ASSET_BYTES = 20 * 1024 * 1024
MAX_ASSET_PIXELS = 40_000_000
# Only the formats email images are made from: every other decoder is attack surface.
_ASSET_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
_STACK_SEPARATOR = ","
# A stack names at most this many faces before the fallback chain.
_MAX_NAMED_FACES = 8


@dataclass(frozen=True, slots=True)
class Asset:
    """A decoded image asset; equal (and hashed) by name and content digest.

    `image` is RGBA and shared by every render that uses the asset: never modify it.
    """

    name: str
    digest: str  # sha256 hex of the file bytes
    image: Image.Image = field(compare=False, repr=False)


class LocalResources:
    """Fonts by name, and assets from directories on this machine.

    `fonts` maps names to font files (paths, checked now: a broken one stops the start)
    or to faces (from `renderers.fonts.available_fonts`, checked when first named). Every
    stack ends with `fallback` (default: `default_fallback()`).
    """

    def __init__(
        self,
        assets_dirs: Sequence[Path],
        fonts: Mapping[str, Path | FontFace],
        *,
        fallback: Sequence[FontFace] | None = None,
        max_bytes: int = MAX_ASSET_BYTES,
        max_pixels: int = MAX_ASSET_PIXELS,
    ) -> None:
        self._dirs = tuple(Path(d).resolve() for d in assets_dirs)
        self._faces: dict[str, FontFace] = {}
        for name, font in fonts.items():
            key = name.strip().lower()
            if isinstance(font, FontFace):
                self._faces[key] = font
            else:
                # A broken font is a configuration error: fail at start-up, not on an open.
                self._faces[key] = _checked(FontFace(key, str(font)))
        self._fallback = default_fallback() if fallback is None else tuple(map(_checked, fallback))
        self._stacks: dict[str, FontStack] = {}
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._assets: dict[Path, tuple[tuple[int, int], Asset]] = {}

    def font(self, name: str) -> FontStack:
        """The stack for `name` (font names separated by commas), then the fallback chain."""
        key = ", ".join(part.strip().lower() for part in name.split(_STACK_SEPARATOR))
        stack = self._stacks.get(key)
        if stack is None:
            stack = self._stack(key)
            self._stacks[key] = stack
        return stack

    def _stack(self, key: str) -> FontStack:
        names = key.split(", ")
        if len(names) > _MAX_NAMED_FACES:
            raise FieldError(f"names more than {_MAX_NAMED_FACES} fonts")
        named: list[FontFace] = []
        for name in names:
            face = self._faces.get(name)
            if face is None:
                raise FieldError(
                    f'unknown font: "{name}"; known fonts include: {", ".join(self._examples())}'
                )
            try:
                named.append(_checked(face))
            except FontError as exc:
                raise FieldError(str(exc)) from None
        weight = face_info(named[0]).weight
        tail = tuple(
            replace(face, weight=weight) if weight != 400 else face for face in self._fallback
        )
        faces = tuple(dict.fromkeys((*named, *(f for f in tail if f not in named))))
        return FontStack(key, faces)

    def _examples(self) -> list[str]:
        """Font names to suggest in an error: the built-in ones, not the whole system's."""
        builtin = set(builtin_fonts())
        return sorted(name for name in self._faces if name in builtin)

    def asset(self, name: str) -> Asset:
        if is_remote(name):
            remote_url(name)  # says what is wrong with a bad URL
            raise FieldError(
                "a remote image is fetched when the email is opened, so only variants can use "
                "one, not the default"
            )
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
        image = decode_image(name, data, max_pixels=self._max_pixels)
        asset = Asset(name, hashlib.sha256(data).hexdigest(), image)
        self._assets[path] = (version, asset)
        return asset


def decode_image(name: str, data: bytes, *, max_pixels: int) -> Image.Image:
    """`data` decoded as an upright RGBA image; FieldError if it is not a PNG, JPEG, GIF or WebP.

    The pixel count is checked from the header, before any pixel is decoded, so a small
    file that would decode to gigabytes (a decompression bomb) costs nothing.
    """
    try:
        source = Image.open(io.BytesIO(data), formats=_ASSET_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FieldError(f'"{name}" has more than {max_pixels // 1_000_000} megapixels') from None
    except (OSError, ValueError, SyntaxError):
        raise FieldError(f'"{name}" is not a PNG, JPEG, GIF or WebP image') from None
    with source:
        if source.width * source.height > max_pixels:
            raise FieldError(f'"{name}" has more than {max_pixels // 1_000_000} megapixels')
        try:
            # Phone photos are often stored sideways with an EXIF rotation tag.
            upright = ImageOps.exif_transpose(source)
            return upright.convert("RGBA")
        except (OSError, ValueError, SyntaxError, EOFError):
            raise FieldError(f'"{name}" cannot be decoded') from None


@functools.cache
def default_fallback() -> tuple[FontFace, ...]:
    """The faces behind every stack: the bundled chain, with the system's colour emoji fonts.

    Colour emoji fonts are found through fontconfig (Debian's fonts-noto-color-emoji,
    say); without one, emoji are drawn in monochrome Noto Emoji. Raises FontError naming
    a bundled face that is missing: the service must not start without them.
    """
    colour = [face for name, face in sorted(system_fonts().items()) if _colour_emoji(name, face)]
    return tuple(_checked(face) for face in fallback_chain(bundled_fonts(), colour))


@functools.cache
def default_stack() -> FontStack:
    """The `sans` stack: Roboto Regular, then `default_fallback()`."""
    sans = _checked(FontFace(DEFAULT_FONT, str(builtin_fonts()[DEFAULT_FONT])))
    return FontStack(DEFAULT_FONT, (sans, *default_fallback()))


def _checked(face: FontFace) -> FontFace:
    """`face`, once FreeType has opened it (FontError naming it otherwise)."""
    load_font(face, 12)
    return face


def _colour_emoji(name: str, face: FontFace) -> bool:
    """Colour emoji fonts found among the configured ones (Noto Color Emoji, Twemoji, ...)."""
    if "emoji" not in name:
        return False
    try:
        return face_info(face).colour
    except FontError:
        return False


def _relative_name(name: str) -> str:
    """`name` as a path inside an assets directory, or FieldError if it could leave it."""
    cleaned = name.strip()
    if not cleaned or "\\" in cleaned or "\x00" in cleaned:
        raise FieldError(f'not an asset file name: "{name}"')
    path = PurePosixPath(cleaned)
    if path.is_absolute() or ".." in path.parts:
        raise FieldError(f'must be a file name inside the assets directory: "{name}"')
    return str(path)
