"""Fixtures: a real Redis server, the real app, and small helpers to talk to it.

Tests use the embedded store (a real redis-server started once per session), or the
server at `ATOPEN_TEST_REDIS_URL`. Each test starts from an empty database: point that
variable only at a disposable database.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import geoip2.database
import pytest
import redis
from aiohttp.test_utils import TestClient
from playwright import sync_api as playwright_api
from support import CITY_DB, SCOPED_TOKENS, SECRET, TOKEN

from content_sources.geo import open_geoip
from server.api_tokens import parse_scoped_tokens
from server.datastore.embedded_redis import EmbeddedRedis
from server.settings import Settings
from server.web.app import create_app

# The reason a browser test is skipped with, which the session's summary looks for.
BROWSER_MISSING = "NO BROWSER: the browser tests need Chromium"


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ATOPEN_TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("store"), persistent=False) as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The store's URL, with the database emptied for this test."""
    with redis.Redis.from_url(redis_server_url) as client:
        client.flushdb()
    return redis_server_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A generous deadline: a loaded CI machine must not turn variant tests into fallbacks.
    # Tests of the deadline itself set their own.
    # The scheduled segments job is off: tests of it run it themselves.
    return Settings(
        secrets=(SECRET,),
        api_tokens=(TOKEN,),
        data_dir=tmp_path,
        render_deadline_ms=10_000,
        segments_interval_s=0,
    )


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str, settings: Settings) -> ClientFactory:
    """Start the real app (optionally with other settings or store) and a client for it."""

    async def make(
        app_settings: Settings | None = None, store_url: str | None = None
    ) -> TestClient[Any, Any]:
        app = create_app(app_settings or settings, redis_url=store_url or redis_url)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture
def scoped_settings(settings: Settings) -> Settings:
    """The test settings with the named tokens of `support.SCOPED_TOKENS` too."""
    scoped = ",".join(
        f"{name}:{secret}:{scopes}" for name, (secret, scopes) in SCOPED_TOKENS.items()
    )
    return dataclasses.replace(
        settings, scoped_api_tokens=parse_scoped_tokens("ATOPEN_API_TOKENS", scoped)
    )


@pytest.fixture
async def scoped_client(
    make_client: ClientFactory, scoped_settings: Settings
) -> TestClient[Any, Any]:
    return await make_client(scoped_settings)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client of the test's store, to look at what the app wrote."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A running store of the test's own, for a test that stops it under the app (the
    shared one must keep running); stopped at the end if the test has not."""
    with EmbeddedRedis(tmp_path / "own-store", persistent=False) as store:
        yield store


@pytest.fixture(scope="session")
def reader() -> Iterator[geoip2.database.Reader]:
    """The GeoIP2 City test database, opened once."""
    opened = open_geoip(CITY_DB)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system's Chromium, headless, driven by Playwright (skipped without it, and the
    session's summary says so loudly)."""
    chromium_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium_path is None:
        pytest.skip(f"{BROWSER_MISSING}: apt-get install chromium")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, headless=True)
        yield chromium
        chromium.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly when the browser tests could not run (no Chromium here)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any(BROWSER_MISSING in str(report.longrepr) for report in skipped):
        terminalreporter.write_sep(
            "!", "the browser tests were SKIPPED: no Chromium", red=True, bold=True
        )
        terminalreporter.write_line(
            "  install it to run them: apt-get install chromium (CI's .ci/run does)", red=True
        )
