"""`GET /studio`: the marketers' workbench, a static page beside this module.

The page (index.html, studio.js, studio.css and the vendored Preact and htm under
vendor/) talks to the management API with the token the marketer signs in with, which
it keeps in the tab's session storage, never in a URL. The files are read once, when the
app is built: serving them needs no disk access, and a file that is missing fails the
start, not a marketer's visit.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STUDIO_DIR = Path(__file__).parent
STUDIO_PATH = "/studio"
_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
}
_FILES = (
    "index.html",
    "studio.js",
    "studio.css",
    "vendor/preact.mjs",
    "vendor/preact-hooks.mjs",
    "vendor/htm.mjs",
)
# The page's one inline script is its import map (browsers take no import map from a
# file); the policy allows exactly that script by its hash, and nothing else inline.
_IMPORT_MAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str


def _policy(index: bytes) -> str:
    found = _IMPORT_MAP.search(index)
    if found is None:
        raise RuntimeError("studio/index.html has no import map")
    digest = base64.b64encode(hashlib.sha256(found.group(1)).digest()).decode()
    return (
        "default-src 'none'; "
        f"script-src 'self' 'sha256-{digest}'; "
        "style-src 'self'; "
        # Previews are images the page fetched itself, shown from blob: URLs.
        "img-src 'self' blob: data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def studio_routes() -> list[web.RouteDef]:
    """The page at `/studio` and its files under `/studio/` (`/studio/` itself is none of
    them: the page's links are absolute, and one address for it is enough)."""
    assets = {
        name: _Asset((STUDIO_DIR / name).read_bytes(), _CONTENT_TYPES[Path(name).suffix])
        for name in _FILES
    }
    headers = {
        "Content-Security-Policy": _policy(assets["index.html"].body),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Always the files of the running version (they are small); no-cache still lets
        # the browser revalidate rather than fetch, but nothing here is worth the risk.
        "Cache-Control": "no-store",
    }

    async def page(request: web.Request) -> web.Response:
        return _answer(assets["index.html"], headers)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None or found is assets["index.html"]:
            return web.Response(status=404, text="not found")
        return _answer(found, headers)

    return [
        web.RouteDef("GET", STUDIO_PATH, page, {}),
        web.RouteDef("GET", STUDIO_PATH + "/{name:.+}", asset, {}),
    ]


def _answer(found: _Asset, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=found.body, content_type=found.content_type, charset="utf-8", headers=headers
    )
