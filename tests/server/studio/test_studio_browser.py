"""The studio in a real browser: the system's Chromium, headless, driven by Playwright.

The real app serves on a loopback port (on the test session's real Redis); the browser
signs in, opens a block, checks that every preview decodes at its size, saves a block
with a mistake and finds the mistake at its field, saves a good one and sees the
previews change, and copies a snippet. Screenshots are kept under `.artifacts/studio/`.

Without Chromium these tests are skipped (the `browser` fixture, tests/conftest.py), and
the session's summary says so loudly: `.ci/run` installs it, so CI always runs them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from PIL import Image
from sample_blocks import one_variant_block
from support import AUTH, SECRET, TOKEN, LiveApp, signed

from server.api_tokens import ApiToken, Scope
from server.settings import Settings

# Slow, left out of `make test-fast`: they drive the studio in Chromium.
pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[3] / ".artifacts" / "studio"
BLOCK = "hero"
READER = "u1"
# A named token that may look but not change blocks (contract section 9).
LOOKER = ApiToken("anna", "looker-token", frozenset({Scope.READ}))


def hero(color: str) -> dict[str, Any]:
    """A block that greets a reader whose profile has a first name, in `color`."""
    block = one_variant_block(
        "named",
        "true",
        "Hi {{ profile.first_name }}",
        "https://shop.example.com/you",
        background=color,
        size=30,
        color="#ffffff",
    )
    return {"description": "Greets a known reader", **block}


@pytest.fixture(scope="module")
def studio(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    with redis.Redis.from_url(redis_server_url) as store:
        store.flushdb()
    settings = Settings(
        secrets=(SECRET,),
        api_tokens=(TOKEN,),
        scoped_api_tokens=(LOOKER,),
        data_dir=Path(tmp_path_factory.mktemp("studio")),
        render_deadline_ms=10_000,
        segments_interval_s=0,
    )
    with LiveApp(settings, redis_server_url) as app:
        yield app


@pytest.fixture
def seeded(studio: LiveApp) -> LiveApp:
    """The block in its first colour, and a reader with a first name."""
    for path, body in (
        (f"/api/v1/blocks/{BLOCK}", hero("#0b6e4f")),
        (f"/api/v1/profiles/{READER}", {"first_name": "Ann"}),
    ):
        answer = requests.put(studio.base_url + path, json=body, headers=AUTH, timeout=30)
        assert answer.status_code < 300, answer.text
    return studio


@pytest.fixture
def page(browser: Any, seeded: LiveApp, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=seeded.base_url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # The browser logs every answer of 4xx as an error; the answers the studio expects
    # (a refused token, no /api/v1/me on this server) are not errors of the page.
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    tab.goto(seeded.base_url + "/studio")
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert not errors, errors


def stored_version(app: LiveApp) -> int:
    answer = requests.get(f"{app.base_url}/api/v1/blocks/{BLOCK}", headers=AUTH, timeout=30)
    version: int = answer.json()["version"]
    return version


def sign_in(page: Any, token: str = TOKEN) -> None:
    page.fill("#token", token)
    page.click("button[type=submit]")


def open_block(page: Any) -> None:
    sign_in(page)
    page.click(f"tr[data-block='{BLOCK}'] .open-block")
    page.wait_for_selector("#block-title")


def previews_done(page: Any, count: int, reader: str, version: int | None = None) -> list[Any]:
    """The preview figures, once all `count` of them, for `reader` (and of the block's
    `version`, when given: a save shows the new title a moment before new previews), have
    rendered."""
    page.wait_for_function(
        """wanted => {
            const all = [...document.querySelectorAll('figure.preview')];
            return all.length === wanted.count && all.every(figure =>
                figure.dataset.state === 'done' && figure.dataset.reader === wanted.reader
                && (wanted.version === null || figure.dataset.version === String(wanted.version)));
        }""",
        arg={"count": count, "reader": reader, "version": version},
    )
    return list(page.query_selector_all("figure.preview"))


def pixel(figure: Any) -> tuple[int, ...]:
    """The colour the browser decoded at (2, 2) of the preview's image."""
    return tuple(
        figure.eval_on_selector(
            "img",
            """img => {
                const canvas = document.createElement('canvas');
                canvas.width = img.naturalWidth;
                canvas.height = img.naturalHeight;
                const context = canvas.getContext('2d');
                context.drawImage(img, 0, 0);
                return Array.from(context.getImageData(2, 2, 1, 1).data.slice(0, 3));
            }""",
        )
    )


@pytest.fixture
def preview_images(page: Any) -> list[Image.Image]:
    """Every preview image the page receives, decoded by Pillow (as it passes by)."""
    images: list[Image.Image] = []

    def pass_on(route: Any) -> None:
        response = route.fetch()
        if response.headers.get("content-type", "").startswith("image/"):
            image = Image.open(io.BytesIO(response.body()))
            image.load()
            images.append(image)
        route.fulfill(response=response)

    page.route("**/preview", pass_on)
    return images


def test_a_wrong_token_is_refused_and_the_right_one_kept_out_of_the_url(
    page: Any, seeded: LiveApp
) -> None:
    sign_in(page, "not-the-token")
    assert "not accepted" in page.inner_text("#sign-in-error")
    sign_in(page)
    page.wait_for_selector(f"tr[data-block='{BLOCK}']")
    row = page.inner_text(f"tr[data-block='{BLOCK}']")
    assert "named, default" in row
    assert f"version {stored_version(seeded)}" in row
    assert page.evaluate("sessionStorage.getItem('atopen.studio.token')") == TOKEN
    assert TOKEN not in page.url
    # A reload keeps the session; signing out forgets the token.
    page.reload()
    page.wait_for_selector(f"tr[data-block='{BLOCK}']")
    page.click("#sign-out")
    page.wait_for_selector("#token")
    assert page.evaluate("sessionStorage.getItem('atopen.studio.token')") is None


def test_every_preview_decodes_at_its_size_with_its_variant_and_why(
    page: Any, preview_images: list[Image.Image]
) -> None:
    open_block(page)
    page.fill("#profile-id", READER)
    page.click("text=Add profile")
    page.wait_for_function("r => document.querySelector('#readers').value === r", arg=READER)
    page.check("input[name=client][value=apple_mpp]")
    page.select_option("#dpr", "2")
    # One reader, one time, two clients.
    figures = previews_done(page, 2, READER)
    for figure in figures:
        size = figure.eval_on_selector("img", "img => [img.naturalWidth, img.naturalHeight]")
        assert size == [600, 200]
        assert figure.get_attribute("data-variant") == "named"
        assert "named: chosen" in figure.eval_on_selector(".trace", "e => e.textContent")
    # Every image the page received decoded, each at its pixel ratio's size (the
    # previews before the last choices were made came at 1x).
    assert {image.size for image in preview_images} <= {(300, 100), (600, 200)}
    assert sum(image.size == (600, 200) for image in preview_images) >= 2
    # A reader typed as JSON, with no stored profile: the default, and why.
    page.fill("#readers", '{"params": {"coupon": "SPRING"}}')
    page.click("#block-title")  # the readers field takes its text when it loses focus
    figures = previews_done(page, 2, "reader on line 1")
    assert {f.get_attribute("data-variant") for f in figures} == {"default"}
    assert "named: passed over, missing value" in figures[0].eval_on_selector(
        ".trace", "e => e.textContent"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "previews.png"), full_page=True)


def test_a_mistake_shows_at_its_field_and_a_good_save_changes_the_previews(
    page: Any, seeded: LiveApp
) -> None:
    version = stored_version(seeded)
    open_block(page)
    page.fill("#readers", READER)
    page.click("#block-title")
    (figure,) = previews_done(page, 1, READER)
    assert pixel(figure) == (0x0B, 0x6E, 0x4F)

    definition = page.input_value("#definition")
    page.fill("#definition", definition.replace('"#0b6e4f"', '"#zz"'))
    page.click("#save")
    problem = page.wait_for_selector("#problems li[data-field='variants[0].layers[0].color']")
    lines = page.input_value("#definition").split("\n")
    wrong_line = next(i for i, line in enumerate(lines, 1) if '"#zz"' in line)
    assert problem.get_attribute("data-line") == str(wrong_line)
    assert "bad" in (page.get_attribute(f".gutter [data-line='{wrong_line}']", "class") or "")
    assert "Not saved" in page.inner_text("#save-notice")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "save-error.png"), full_page=True)
    # Nothing was saved: the server still has the first version.
    assert stored_version(seeded) == version

    page.fill("#definition", definition.replace('"#0b6e4f"', '"#3355aa"'))
    page.click("#save")
    assert f"version {version + 1}" in page.inner_text("#save-notice")
    assert not page.query_selector("#problems")
    page.wait_for_function(
        "v => document.querySelector('#block-title').textContent.includes(`version ${v}`)",
        arg=version + 1,
    )
    (figure,) = previews_done(page, 1, READER, version + 1)
    assert pixel(figure) == (0x33, 0x55, 0xAA)


def test_the_snippet_for_a_chosen_service_is_copied(page: Any) -> None:
    open_block(page)
    page.select_option("#esp", "mailchimp")
    page.wait_for_function(
        "() => (document.querySelector('#snippet-html') || {}).value?.includes('*|ATOPEN_TOK|*')"
    )
    page.click("#snippet-html + button")
    page.wait_for_selector("text=Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.input_value("#snippet-html")
    assert f"/i/{BLOCK}.png?dpr=2&amp;r=*|URL:ATOPEN_ID|*&amp;t=*|ATOPEN_TOK|*" in copied


def test_a_read_only_token_looks_without_saving(page: Any) -> None:
    sign_in(page, LOOKER.token)
    page.click(f"tr[data-block='{BLOCK}'] .open-block")
    page.wait_for_selector("#block-title")
    assert "anna" in page.inner_text("header")
    assert page.is_visible("#read-only")
    assert "not save" in page.inner_text(".notice")
    previews_done(page, 1, "anyone (no recipient data)")
    assert page.query_selector("#save") is None
    assert page.get_attribute("#definition", "readonly") is not None


def variant_rows(app: LiveApp) -> dict[str, int]:
    """Impressions by variant in today's report, as the API answers it."""
    now = datetime.now(UTC)
    span = {"from": (now - timedelta(days=1)).isoformat(), "to": now.isoformat(), "by": "variant"}
    answer = requests.get(
        f"{app.base_url}/api/v1/blocks/{BLOCK}/stats", params=span, headers=AUTH, timeout=30
    )
    return {row["key"]: row["impressions"] for row in answer.json()["rows"]}


def test_the_stats_show_the_opens_of_the_block(page: Any, seeded: LiveApp) -> None:
    before = variant_rows(seeded).get("named", 0)
    opened = requests.get(seeded.base_url + signed(f"/i/{BLOCK}.png?r={READER}"), timeout=30)
    assert opened.headers["X-Atopen-Variant"] == "named"
    # Opens are recorded off the response path, a batch at a time: wait until it is in.
    for _ in range(200):
        if variant_rows(seeded).get("named", 0) > before:
            break
        time.sleep(0.05)
    expected = variant_rows(seeded)["named"]
    open_block(page)
    row = page.wait_for_selector("#stats tbody tr:has-text('named')")
    assert row.inner_text().split("\t")[:2] == ["named", f"{expected:,}"]
