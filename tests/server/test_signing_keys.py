"""Senders compute the URL signature with their own HMAC-SHA256: atopen's must equal it
for a key of any length (a key longer than SHA-256's 64-byte block is hashed first)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from server.signing import Signer

PAIRS = [("r", "u1"), ("m.name", "Małgorzata")]


def contract_signature(key: str, canonical: str) -> str:
    digest = hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    "key", ["k", "k" * 63, "k" * 64, "k" * 65, "ł" * 32, "ł" * 33, "secret-" * 40]
)
def test_the_signature_is_hmac_sha256_for_keys_of_any_length(key: str) -> None:
    signer = Signer([key])
    canonical = "/i/hero.png?m.name=Ma%C5%82gorzata&r=u1"
    assert signer.signature("/i/hero.png", PAIRS) == contract_signature(key, canonical)
    signed = signer.sign_url("/i/hero.png?r=u1&m.name=Ma%C5%82gorzata")
    path, _, query = signed.partition("?")
    assert Signer(["other", key]).verify_request(path, query, PAIRS)
    assert not Signer(["other", key + "x"]).verify_request(path, query, PAIRS)
