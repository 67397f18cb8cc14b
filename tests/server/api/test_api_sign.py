"""`POST /api/v1/sign`: URLs the image endpoint accepts as signed; bad input and body limits."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sample_blocks import greeting
from support import AUTH, SECRET, put_block

from server.settings import Settings
from server.signing import Signer

Client = TestClient[Any, Any]
URL = "/api/v1/sign"


async def sign(client: Client, urls: list[str]) -> list[str]:
    response = await client.post(URL, json={"urls": urls}, headers=AUTH)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert set(body) == {"urls"}
    assert len(body["urls"]) == len(urls)
    # A path comes back absolute, on the service's public base URL.
    base = Settings().base_url
    for given, returned in zip(urls, body["urls"], strict=True):
        assert returned.startswith(base if given.startswith("/") else given.split("?")[0])
    return [u.removeprefix(base) for u in body["urls"]]


async def variant_of(client: Client, url: str) -> str:
    response = await client.get(url)
    assert response.status == 200
    return str(response.headers["X-Atopen-Variant"])


def bad_fields(payload: Any) -> list[str]:
    assert payload["error"]["code"] == "invalid"
    return [d["field"] for d in payload["error"]["details"]]


async def test_signed_urls_unlock_the_recipient_variant(client: Client) -> None:
    await put_block(client, "greet", greeting())
    await client.put("/api/v1/profiles/u1", json={"first_name": "Ann"}, headers=AUTH)
    unsigned = "/i/greet.png?r=u1&m.campaign=spring"
    [signed_url] = await sign(client, [unsigned])

    assert await variant_of(client, signed_url) == "named"
    assert await variant_of(client, unsigned) == "default"
    # The signature covers the query: changing the recipient voids it.
    tampered = signed_url.replace("r=u1", "r=u2")
    assert tampered != signed_url
    assert await variant_of(client, tampered) == "default"


async def test_signatures_match_the_contract(client: Client) -> None:
    urls = [
        "/i/greet.png?r=u1",
        "/i/greet.gif?r=u%C5%82&m.name=a+b&dpr=2",
        "https://img.example.com/c/greet?r=u1&sig=stale",
    ]
    signed_urls = await sign(client, urls)
    verifier = Signer([SECRET])
    for original, signed_url in zip(urls, signed_urls, strict=True):
        parts = urlsplit(signed_url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        assert verifier.verify(parts.path, pairs), signed_url
        assert parts.path == urlsplit(original).path
        assert [v for k, v in pairs if k == "sig"] != ["stale"]
    absolute = urlsplit(signed_urls[2])
    assert (absolute.scheme, absolute.netloc) == ("https", "img.example.com")


async def test_signed_url_with_several_urls_keeps_their_order(client: Client) -> None:
    await put_block(client, "greet", greeting())
    await client.put("/api/v1/profiles/u2", json={"first_name": "Bo"}, headers=AUTH)
    signed_urls = await sign(client, ["/i/greet.png?r=u1", "/i/greet.png?r=u2"])
    assert "r=u1" in signed_urls[0]
    assert "r=u2" in signed_urls[1]
    assert await variant_of(client, signed_urls[0]) == "default"  # u1 has no profile
    assert await variant_of(client, signed_urls[1]) == "named"


INVALID = {
    "missing urls": ({}, "urls"),
    "urls not a list": ({"urls": "/i/greet.png"}, "urls"),
    "empty list": ({"urls": []}, "urls"),
    "non-string entry": ({"urls": ["/i/greet.png?r=u1", 7]}, "urls[1]"),
    "null entry": ({"urls": ["/i/greet.png", None]}, "urls[1]"),
    "no path": ({"urls": ["https://img.example.com"]}, "urls[0]"),
    "relative path": ({"urls": ["i/greet.png?r=u1"]}, "urls[0]"),
    "other scheme": ({"urls": ["ftp://img.example.com/i/greet.png"]}, "urls[0]"),
    "scheme without host": ({"urls": ["https:/i/greet.png"]}, "urls[0]"),
}


@pytest.mark.parametrize(("body", "field"), list(INVALID.values()), ids=list(INVALID))
async def test_invalid_sign_request_is_422_naming_the_field(
    client: Client, body: Any, field: str
) -> None:
    response = await client.post(URL, json=body, headers=AUTH)
    assert response.status == 422
    assert bad_fields(await response.json()) == [field]


async def test_sign_body_must_be_a_json_object(client: Client) -> None:
    for raw in (b'["/i/greet.png"]', b"not json", b""):
        response = await client.post(
            URL, data=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status == 422, raw
        assert bad_fields(await response.json()) == ["body"]


async def test_body_over_the_limit_is_413_json(make_client: Any, settings: Settings) -> None:
    client = await make_client(dataclasses.replace(settings, api_max_body_bytes=1024))
    small = await client.post(URL, json={"urls": ["/i/greet.png?r=u1"]}, headers=AUTH)
    assert small.status == 200

    body = orjson.dumps({"urls": [f"/i/greet.png?r=u{i}" for i in range(200)]})
    assert len(body) > 1024
    response = await client.post(
        URL, data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == 413
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error["code"] == "too_large"
    assert "1024" in error["message"]
    assert isinstance(error["details"], list)
