"""Helpers the tests share: signing, decoding images, registering blocks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from PIL import Image

from server.api.audit import AUDIT_KEY
from server.datastore.worker_presence import APPLIED_KEY, WORKERS_KEY
from server.records.record import Record, RecordType
from server.settings import Settings
from server.signing import Signer
from server.web.app import create_app

SECRET = "test-secret"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Named API tokens (`ATOPEN_API_TOKENS`), one per scope and one with two: name -> (secret,
# scopes). The `scoped_client` fixture serves them; `bearer(name)` sends one.
SCOPED_TOKENS = {
    "reader": ("reader-secret", "read"),
    "crm": ("crm-secret", "data"),
    "designer": ("designer-secret", "blocks"),
    "ops": ("ops-secret", "admin"),
    "analyst": ("analyst-secret", "read+data"),
}
# MaxMind's test database, and an address it places in London, with what `geo` says of
# an open from there (the recipient's profile having no location).
CITY_DB = Path(__file__).parent / "data" / "geoip" / "GeoIP2-City-Test.mmdb"
LONDON_IP = "81.2.69.160"
LONDON_GEO: dict[str, Any] = {
    "country": "GB",
    "city": "London",
    "lat": 51.5142,
    "lon": -0.0931,
    "tz": "Europe/London",
    "source": "ip",
}


def bearer(name: str) -> dict[str, str]:
    """The Authorization header of the named token `name` of SCOPED_TOKENS."""
    return {"Authorization": f"Bearer {SCOPED_TOKENS[name][0]}"}


def signed(path_and_query: str, secret: str = SECRET) -> str:
    return Signer([secret]).sign_url(path_and_query)


def contract_token(key: str, recipient: str) -> str:
    """A recipient's token by the contract's formula, written out: base64url without
    padding of HMAC-SHA256 of `r:` and the recipient id."""
    digest = hmac.digest(key.encode(), f"r:{recipient}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


async def put_block(
    client: TestClient[Any, Any], block_id: str, definition: dict[str, Any]
) -> None:
    response = await client.put(f"/api/v1/blocks/{block_id}", json=definition, headers=AUTH)
    assert response.status in (200, 201), await response.text()


async def refused_fields(response: ClientResponse) -> list[str]:
    """The fields a 422 answer names, in its order (and a failure if it is not a 422)."""
    assert response.status == 422, await response.text()
    body = await response.json()
    return [detail["field"] for detail in body["error"]["details"]]


def run_command(
    command: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` to its end, its output captured as text, whatever its exit status."""
    return subprocess.run(  # noqa: S603 - the tests' own commands
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(
    command: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """`run_command`, failing the test with the command's output unless it exits 0; its stdout."""
    done = run_command(command, timeout=timeout, cwd=cwd, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# Keeps the store busy (it runs one command at a time) for ARGV[1] milliseconds.
BUSY_STORE = """
local start = redis.call('TIME')
local until_us = start[1] * 1e6 + start[2] + ARGV[1] * 1000
repeat
  local now = redis.call('TIME')
until now[1] * 1e6 + now[2] >= until_us
return 0
"""


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def human_record(
    type_: RecordType, block: str, variant: str, recipient: str, at: datetime
) -> Record:
    """A record of a person reading in a browser: an open that was rendered, or a click
    (to https://x/), of version 1 of `block`."""
    return Record(
        int(at.timestamp() * 1000),
        type_,
        block,
        1,
        variant,
        recipient,
        "browser",
        "human",
        None,
        "rendered" if type_ == "open" else None,
        None if type_ == "open" else "https://x/",
    )


def data_keys(store: Any) -> list[bytes]:
    """The keys of a (synchronous) store client that hold data: all but the running
    workers' own presence, which every app writes when it starts, and the audit log,
    which records every API write, refused ones too."""
    bookkeeping = {WORKERS_KEY.encode(), APPLIED_KEY.encode(), AUDIT_KEY.encode()}
    return [key for key in store.keys("*") if key not in bookkeeping]


class LiveApp:
    """The real app on a loopback port, served by an event loop in a background thread."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._app = create_app(settings, redis_url=redis_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None

    def __enter__(self) -> LiveApp:
        self._thread.start()
        self._runner = web.AppRunner(self._app)

        async def start() -> None:
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)
        self._loop.close()
