"""The documentation's links lead somewhere: every relative link and image in README.md,
CHANGELOG.md, SECURITY.md and docs/ names a file or directory of the repository, and
every `#anchor` names a heading of the page it points into, as GitHub renders it. Every
page of docs/ is linked from the docs index, and the README links the index.

Markdown is parsed with markdown-it-py (CommonMark), so links inside code are not links.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "SECURITY.md", *DOCS.rglob("*.md")]
)
PARSER = MarkdownIt("commonmark").enable("table")


def tokens(page: Path) -> list[Token]:
    return PARSER.parse(page.read_text(encoding="utf-8"))


def inline_children(page: Path) -> list[Token]:
    return [child for token in tokens(page) for child in (token.children or [])]


def slug(text: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped (letters,
    digits, `_` and `-` of any script kept), each space a hyphen."""
    lowered = text.strip().lower()
    kept = "".join(
        c
        for c in lowered
        if c in " -_" or unicodedata.category(c)[0] in ("L", "N") or unicodedata.category(c) == "Mn"
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    stream = tokens(page)
    for i, token in enumerate(stream):
        if token.type != "heading_open":
            continue
        inline = stream[i + 1]
        text = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline")
        )
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_targets(page: Path) -> list[str]:
    targets = []
    for child in inline_children(page):
        if child.type == "link_open":
            targets.append(str(child.attrs["href"]))
        elif child.type == "image":
            targets.append(str(child.attrs["src"]))
    html_links = re.findall(r'(?:href|src)="([^"]+)"', page.read_text(encoding="utf-8"))
    return [t for t in targets + html_links if not urlsplit(t).scheme and not t.startswith("//")]


def test_the_pages_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/README.md", "docs/operations.md", "docs/api.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in relative_targets(page):
        parts = urlsplit(target)
        path = unquote(parts.path)
        destination = (page.parent / path).resolve() if path else page
        if not destination.is_relative_to(ROOT) or not destination.exists():
            broken.append(f"{target}: no such file")
            continue
        fragment = unquote(parts.fragment)
        if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no such heading in {destination.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def linked_pages(page: Path) -> set[Path]:
    return {
        (page.parent / unquote(urlsplit(target).path)).resolve()
        for target in relative_targets(page)
        if urlsplit(target).path
    }


def test_every_docs_page_is_linked_from_the_index_and_the_readme() -> None:
    index = DOCS / "README.md"
    pages = {page.resolve() for page in DOCS.rglob("*.md")} - {index.resolve()}
    unlinked = sorted(p.relative_to(ROOT).as_posix() for p in pages - linked_pages(index))
    assert not unlinked, f"not linked from docs/README.md: {unlinked}"
    from_readme = linked_pages(ROOT / "README.md")
    assert index.resolve() in from_readme
    top_level = {page.resolve() for page in DOCS.glob("*.md")} - {index.resolve()}
    missing = sorted(p.relative_to(ROOT).as_posix() for p in top_level - from_readme)
    assert not missing, f"not linked from README.md: {missing}"


def test_the_checker_sees_a_broken_anchor_and_a_missing_file(tmp_path: Path) -> None:
    """The checks above can fail: a page with a bad anchor and a missing file."""
    page = DOCS / "README.md"
    assert "getting-started" not in anchors(page)
    assert slug("Variants, `when` and templates") == "variants-when-and-templates"
    assert slug("What `PUT` rejects") == "what-put-rejects"
    assert "what-put-rejects" in anchors(DOCS / "blocks.md")
    assert "no-such-heading" not in anchors(DOCS / "blocks.md")
