"""Helpers the tests share: signing, decoding images, registering blocks."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from server.api.audit import AUDIT_KEY
from server.datastore.worker_presence import APPLIED_KEY, WORKERS_KEY
from server.settings import Settings
from server.signing import Signer
from server.web.app import create_app

SECRET = "test-secret"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def signed(path_and_query: str, secret: str = SECRET) -> str:
    return Signer([secret]).sign_url(path_and_query)


def decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


async def put_block(
    client: TestClient[Any, Any], block_id: str, definition: dict[str, Any]
) -> None:
    response = await client.put(f"/api/v1/blocks/{block_id}", json=definition, headers=AUTH)
    assert response.status in (200, 201), await response.text()


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
