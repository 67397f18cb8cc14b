"""Helpers the tests share: signing, decoding images, registering blocks."""

from __future__ import annotations

import io
import socket
from typing import Any

from aiohttp.test_utils import TestClient
from PIL import Image

from server.api.audit import AUDIT_KEY
from server.signing import Signer
from server.worker_presence import APPLIED_KEY, WORKERS_KEY

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
