"""One email of twenty dynamic images, opened in a real browser (the system's Chromium,
headless, by Playwright) on a two-worker server while the machine runs other work: a
burst below capacity, and every image is the reader's own, decoded by the browser."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sample_blocks import greeting
from support import AUTH, signed
from test_admission import DEFAULT_DEADLINE_MS, other_work
from test_workers import serving, until_every_worker_serves

# Slow, left out of `make test-fast`: a server of two workers and a browser.
pytestmark = pytest.mark.slow

IMAGES = 20
READER = "u1"


def email_page(base: str, blocks: list[str]) -> str:
    """An email's HTML as the reader's mail app gets it: each block's signed image."""
    images = "\n".join(
        f'<img src="{base}{signed(f"/i/{block}.png?r={READER}")}" width="400" height="100">'
        for block in blocks
    )
    return f"<!doctype html><html><body>{images}</body></html>"


def test_an_email_of_twenty_dynamic_images_shows_the_reader_every_one(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    blocks = [f"b{i}" for i in range(IMAGES)]
    with serving(
        redis_url, tmp_path / "data", 2, ATOPEN_RENDER_DEADLINE_MS=DEFAULT_DEADLINE_MS
    ) as served:
        for path, body in (
            *((f"/api/v1/blocks/{block}", greeting()) for block in blocks),
            (f"/api/v1/profiles/{READER}", {"first_name": "Ann"}),
        ):
            answer = requests.put(served.base + path, json=body, headers=AUTH, timeout=30)
            assert answer.status_code < 300, answer.text
        # In a thread of its own: Playwright's sync API runs an event loop in this one.
        ready = until_every_worker_serves(served.base, f"/i/{blocks[-1]}.png?r={READER}", 2)
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, ready).result()
        page_file = tmp_path / "email.html"
        page_file.write_text(email_page(served.base, blocks))
        context = browser.new_context()
        tab = context.new_page()
        answers: dict[str, tuple[int, str | None]] = {}

        def answered(response: Any) -> None:
            if response.url.startswith(served.base):  # an image, not the page itself
                answers[response.url] = (response.status, response.headers.get("x-atopen-variant"))

        tab.on("response", answered)
        # The other work takes the first core twice over. The reader's browser runs on this
        # machine too, and its processes hand each other work many times per image: with
        # both cores spinning it did not even load the page in 20 s, which would say
        # nothing of the server (that answered a direct request then in 4 ms).
        with other_work(processes=2, seconds=30, cores={0}):
            tab.goto(page_file.as_uri(), wait_until="load")
        drawn = tab.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        context.close()
    assert len(answers) == IMAGES
    assert sorted(answers.values()) == [(200, "named")] * IMAGES
    assert drawn == [400] * IMAGES
