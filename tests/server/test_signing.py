"""Tests for the URL signature contract in server.signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit

import pytest

from server.signing import Signer, canonical_string

KEY = "k-2024-primary"
OLD_KEY = "k-2023-retired"

UNICODE_PAIRS = [
    ("m.name", "Małgorzata"),
    ("note", "a b+c&d=e"),
    ("tag", "z"),
    ("tag", "a"),
    ("c", ""),
]


def split(url: str) -> tuple[str, list[tuple[str, str]]]:
    """Decode a URL the way a server would before calling verify."""
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def test_known_answer_vector_matches_contract_formula() -> None:
    # Written out by hand from the contract, without calling the module.
    canonical = "/i/hero.png?c=&m.name=Ma%C5%82gorzata&note=a%20b%2Bc%26d%3De&tag=a&tag=z"
    expected = (
        base64.urlsafe_b64encode(
            hmac.new(KEY.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).digest()
        )
        .rstrip(b"=")
        .decode("ascii")
    )

    assert canonical_string("/i/hero.png", UNICODE_PAIRS) == canonical
    assert Signer([KEY]).signature("/i/hero.png", UNICODE_PAIRS) == expected
    assert "=" not in expected
    assert len(expected) == 43


def test_canonical_string_sorts_by_key_then_value_and_drops_sig() -> None:
    pairs = [("b", "2"), ("a", "y"), ("sig", "whatever"), ("a", "x"), ("B", "1")]
    assert canonical_string("/p", pairs) == "/p?B=1&a=x&a=y&b=2"


def test_canonical_string_without_pairs_keeps_question_mark() -> None:
    assert canonical_string("/p", []) == "/p?"


def test_canonical_string_quotes_keys_and_keeps_unreserved() -> None:
    pairs = [("m.first name", "~a-b_c.d/e")]
    assert canonical_string("/p", pairs) == "/p?m.first%20name=~a-b_c.d%2Fe"


def test_signature_ignores_existing_sig_pair() -> None:
    signer = Signer([KEY])
    plain = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert signer.signature("/i/hero.png", [*UNICODE_PAIRS, ("sig", "stale")]) == plain


def test_signature_does_not_depend_on_input_order() -> None:
    signer = Signer([KEY])
    assert signer.signature("/p", UNICODE_PAIRS) == signer.signature(
        "/p", list(reversed(UNICODE_PAIRS))
    )


def test_verify_accepts_own_signature_from_a_generator() -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert signer.verify("/i/hero.png", (pair for pair in [*UNICODE_PAIRS, ("sig", sig)]))


@pytest.mark.parametrize("index", range(len(UNICODE_PAIRS)))
@pytest.mark.parametrize("part", ["key", "value"])
def test_verify_rejects_any_tampered_pair(index: int, part: str) -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    tampered = list(UNICODE_PAIRS)
    key, value = tampered[index]
    tampered[index] = (key + "x", value) if part == "key" else (key, value + "x")
    assert not signer.verify("/i/hero.png", [*tampered, ("sig", sig)])


def test_verify_rejects_added_or_removed_pair() -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert not signer.verify("/i/hero.png", [*UNICODE_PAIRS, ("extra", ""), ("sig", sig)])
    assert not signer.verify("/i/hero.png", [*UNICODE_PAIRS[1:], ("sig", sig)])


def test_verify_rejects_tampered_path() -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert not signer.verify("/i/hero.gif", [*UNICODE_PAIRS, ("sig", sig)])
    assert not signer.verify("/i/hero.png/", [*UNICODE_PAIRS, ("sig", sig)])


def test_verify_rejects_missing_sig() -> None:
    assert not Signer([KEY]).verify("/i/hero.png", UNICODE_PAIRS)


def test_verify_rejects_duplicated_sig_even_if_one_is_right() -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert not signer.verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", sig), ("sig", sig)])
    assert not signer.verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", sig), ("sig", "x")])


@pytest.mark.parametrize("bad", ["", "x", "Małgorzata", "A" * 43, "not base64 at all!"])
def test_verify_rejects_wrong_sig_without_raising(bad: str) -> None:
    assert not Signer([KEY]).verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", bad)])


def test_verify_rejects_sig_with_restored_padding() -> None:
    signer = Signer([KEY])
    sig = signer.signature("/i/hero.png", UNICODE_PAIRS)
    assert not signer.verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", sig + "=")])


def test_rotation_old_key_still_verifies_when_listed_second() -> None:
    old_sig = Signer([OLD_KEY]).signature("/i/hero.png", UNICODE_PAIRS)
    rotated = Signer([KEY, OLD_KEY])
    assert rotated.verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", old_sig)])


def test_rotation_signs_with_the_first_key() -> None:
    rotated = Signer([KEY, OLD_KEY])
    assert rotated.signature("/p", UNICODE_PAIRS) == Signer([KEY]).signature("/p", UNICODE_PAIRS)
    assert rotated.signature("/p", UNICODE_PAIRS) != Signer([OLD_KEY]).signature(
        "/p", UNICODE_PAIRS
    )


def test_rotation_removed_key_fails() -> None:
    old_sig = Signer([OLD_KEY]).signature("/i/hero.png", UNICODE_PAIRS)
    assert not Signer([KEY]).verify("/i/hero.png", [*UNICODE_PAIRS, ("sig", old_sig)])


def test_keys_are_utf8() -> None:
    key = "clé-secrète"
    canonical = "/p?a=1"
    expected = base64.urlsafe_b64encode(
        hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).digest()
    ).rstrip(b"=")
    assert Signer([key]).signature("/p", [("a", "1")]) == expected.decode("ascii")


@pytest.mark.parametrize("keys", [[], ["ok", ""], [""]])
def test_signer_rejects_empty_keys(keys: list[str]) -> None:
    with pytest.raises(ValueError, match="key"):
        Signer(keys)


def test_signer_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="single string"):
        Signer("secret")


@pytest.mark.parametrize(
    "url",
    [
        "/i/hero.png?m.name=Ma%C5%82gorzata&note=a+b%2Bc%26d%3De&tag=z&tag=a&c=",
        "/i/hero.png?m.name=Małgorzata&c",
        "/i/hero.png",
        "/i/hero.png?",
        "https://img.example.com/i/hero.png?tag=z&tag=a",
        "http://localhost:8080/i/hero.png",
    ],
)
def test_sign_url_round_trips_through_parse_qsl_and_verify(url: str) -> None:
    signer = Signer([KEY])
    path, pairs = split(signer.sign_url(url))
    assert path == urlsplit(url).path
    assert signer.verify(path, pairs)
    assert sorted(p for p in pairs if p[0] != "sig") == sorted(split(url)[1])


def test_sign_url_encodes_canonically_and_appends_sig() -> None:
    signer = Signer([KEY])
    signed = signer.sign_url("/i/hero.png?note=a+b%2Bc&m.name=Ma%C5%82gorzata&tag=z&tag=a")
    pairs = [("note", "a b+c"), ("m.name", "Małgorzata"), ("tag", "z"), ("tag", "a")]
    assert signed == (
        "/i/hero.png?m.name=Ma%C5%82gorzata&note=a%20b%2Bc&tag=a&tag=z&sig="
        + signer.signature("/i/hero.png", pairs)
    )


def test_sign_url_without_query_uses_question_mark() -> None:
    signer = Signer([KEY])
    assert signer.sign_url("/i/hero.png") == "/i/hero.png?sig=" + signer.signature(
        "/i/hero.png", []
    )


def test_sign_url_replaces_existing_sig() -> None:
    signer = Signer([KEY])
    once = signer.sign_url("/i/hero.png?a=1")
    resigned = signer.sign_url(once.replace("sig=", "sig=stale"))
    assert resigned == once
    assert resigned.count("sig=") == 1


def test_sign_url_keeps_scheme_and_host() -> None:
    signer = Signer([KEY])
    signed = signer.sign_url("https://img.example.com:8443/i/hero.png?b=2&a=1")
    parts = urlsplit(signed)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "img.example.com:8443",
        "/i/hero.png",
    )
    assert parts.query.startswith("a=1&b=2&sig=")
    assert signer.verify(*split(signed))


def test_sign_url_output_verifies_with_rotated_signer() -> None:
    signed = Signer([OLD_KEY]).sign_url("/i/hero.png?a=1")
    assert Signer([KEY, OLD_KEY]).verify(*split(signed))
    assert not Signer([KEY]).verify(*split(signed))


@pytest.mark.parametrize(
    "url",
    [
        "",
        "i/hero.png?a=1",
        "?a=1",
        "https://img.example.com",
        "https://img.example.com?a=1",
        "//img.example.com/i/hero.png",
        "ftp://img.example.com/i/hero.png",
        "mailto:someone@example.com",
    ],
)
def test_sign_url_rejects_urls_without_absolute_path(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        Signer([KEY]).sign_url(url)


def verify_as_received(signer: Signer, url: str) -> bool:
    """What the image route calls: the raw query as in the request line, and its pairs."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    return signer.verify_request(parts.path, parts.query, pairs)


def test_verify_request_accepts_signed_urls_as_sent() -> None:
    signer = Signer([KEY])
    query = "&".join(f"{k}={v}" for k, v in [("r", "ann"), ("m.name", "Zoë")])
    for url in ("/i/hero.png", f"/i/hero.png?{query}", "/i/hero.png?tag=z&tag=a&c="):
        assert verify_as_received(signer, signer.sign_url(url))


def test_verify_request_accepts_a_valid_signature_in_any_order() -> None:
    """A sender may put `sig` first or keep its own order: the canonical form decides."""
    signer = Signer([KEY])
    signed = signer.sign_url("/i/hero.png?r=ann&b=2")
    path, query = signed.split("?")
    pairs = query.split("&")
    assert verify_as_received(signer, path + "?" + "&".join([pairs[-1], *pairs[:-1]]))
    assert verify_as_received(signer, path + "?" + "&".join(reversed(pairs[:-1])) + "&" + pairs[-1])
    assert verify_as_received(signer, path + "?" + query.replace("r=ann", "r=%61nn"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: q.replace("r=ann", "r=bob"),
        lambda q: "x=1&" + q,
        lambda q: q + "&x=1",
        lambda q: q.replace("r=ann&", ""),
        lambda q: q + "&sig=" + q.rpartition("sig=")[2],
        lambda q: "%73ig=x&" + q,
        lambda q: q.replace("&sig=", "&sig=A"),
    ],
)
def test_verify_request_rejects_tampered_queries(tamper: object) -> None:
    signer = Signer([KEY])
    path, query = signer.sign_url("/i/hero.png?b=2&r=ann").split("?")
    assert callable(tamper)
    assert not verify_as_received(signer, path + "?" + tamper(query))


def test_verify_request_checks_every_key() -> None:
    signed = Signer([OLD_KEY]).sign_url("/i/hero.png?r=ann")
    assert verify_as_received(Signer([KEY, OLD_KEY]), signed)
    assert not verify_as_received(Signer([KEY]), signed)
