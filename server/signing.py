"""Sign and verify atopen image URLs with HMAC-SHA256.

This module's one job is the URL signature contract, which senders reimplement in
their own languages, so it must stay exactly as written here:

    canonical = PATH + "?" + "&".join(quote(k) + "=" + quote(v)
                                      for k, v in sorted(query pairs without "sig"))
    sig = base64url_without_padding(HMAC_SHA256(key, canonical.encode("utf-8")))

``PATH`` is the URL path as it appears in the request line (not percent-decoded),
the pairs are the *decoded* query pairs sorted by key, then value (keys may repeat),
and ``quote`` is ``urllib.parse.quote(s, safe="-_.~")``.

Several keys may be configured so a secret can be rotated: the first key signs,
every key verifies.

Email services that cannot compute an HMAC per URL use a recipient token instead
(contract section 8), computed once per recipient and kept as a custom field:

    t = base64url_without_padding(HMAC_SHA256(key, "r:" + r))

A URL whose `r` has a valid `t` is that recipient's without a `sig`; its other fields
(`m.*`, `tz`, `dpr`) are then taken as written, not authenticated: anyone holding the
email can change them, as they could change what they type into any link. The prefix
keeps a token from ever equalling a URL signature (a canonical string starts with `/`).
"""

from __future__ import annotations

import hashlib
from binascii import b2a_base64
from collections.abc import Callable, Iterable, Sequence
from hmac import compare_digest
from importlib import import_module
from typing import Protocol, cast
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

SIG_PARAM = "sig"
RECIPIENT_PARAM = "r"
TOKEN_PARAM = "t"  # noqa: S105 - the query parameter's name
_TOKEN_PREFIX = b"r:"
_SIG_FIRST = SIG_PARAM + "="
_SIG_AFTER = "&" + SIG_PARAM + "="

# Only the RFC 3986 unreserved characters stay literal, so every sender that follows
# the contract produces byte-identical canonical strings whatever its URL library does.
_SAFE = "-_.~"


def _quote(text: str) -> str:
    return quote(text, safe=_SAFE)


def _canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(
        _quote(key) + "=" + _quote(value)
        for key, value in sorted(pair for pair in pairs if pair[0] != SIG_PARAM)
    )


def canonical_string(path: str, pairs: Iterable[tuple[str, str]]) -> str:
    """Return the string that is signed for ``path`` and the decoded query ``pairs``.

    Any ``sig`` pair is left out, so the same call works on a signed request.
    """
    return path + "?" + _canonical_query(pairs)


class _Sha256State(Protocol):
    def copy(self) -> _Sha256State: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _sha256_states() -> Callable[[bytes], _Sha256State]:
    """CPython's own SHA-256 (`_sha2` from 3.12, HACL*'s verified code; `_sha256` before),
    else `hashlib`'s (OpenSSL's). The same digests; but a copy of OpenSSL's state
    allocates a context through its provider and wipes it when freed, and a signature
    check makes four: CPython's own checks a signature in about 2,000 fewer
    instructions (a ninth of the check). Builds without it get OpenSSL's."""
    for name in ("_sha2", "_sha256"):
        try:
            return cast(Callable[[bytes], _Sha256State], import_module(name).sha256)
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


_sha256 = _sha256_states()

# HMAC (RFC 2104) over SHA-256 from its two padded-key hash states, each hashed once per
# key: a request copies them, which costs less than copying an `hmac.HMAC` (three digest
# states and a layer of Python). Not `hmac.digest`: its one-shot C path lets go of the
# interpreter lock, and under load a render thread takes it for a whole switch interval
# before the loop gets it back.
_BLOCK_SIZE = 64  # SHA-256's
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class _Keyed:
    """One key's padded hash states."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK_SIZE:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK_SIZE, b"\0")
        self.inner = _sha256(key.translate(_INNER_PAD))
        self.outer = _sha256(key.translate(_OUTER_PAD))

    def signature(self, canonical: bytes) -> bytes:
        """The URL signature of `canonical`: its HMAC, base64url without padding."""
        inner = self.inner.copy()
        inner.update(canonical)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return b2a_base64(outer.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")


class Signer:
    """Signs with the first of its keys and accepts a signature made with any of them."""

    __slots__ = ("_keyed",)

    def __init__(self, keys: Sequence[str]) -> None:
        # A bare string is a Sequence[str] too; accepting it would turn "secret" into
        # six one-letter keys, so the comma-separated setting must be split by the caller.
        if isinstance(keys, str):
            raise TypeError("keys must be a sequence of strings, not a single string")
        if not keys:
            raise ValueError("at least one signing key is required")
        if any(not key for key in keys):
            raise ValueError("signing keys must not be empty")
        self._keyed = tuple(_Keyed(key.encode("utf-8")) for key in keys)

    def signature(self, path: str, pairs: Iterable[tuple[str, str]]) -> str:
        """Return the signature of ``path`` and ``pairs`` made with the first key."""
        canonical = canonical_string(path, pairs).encode("utf-8")
        return self._keyed[0].signature(canonical).decode("ascii")

    def verify(self, path: str, pairs: Iterable[tuple[str, str]]) -> bool:
        """Return True when ``pairs`` hold exactly one ``sig`` that any key produced."""
        pairs = list(pairs)
        given = [value for key, value in pairs if key == SIG_PARAM]
        if len(given) != 1:
            return False
        return self._matches(canonical_string(path, pairs), given[0])

    def verify_request(self, path: str, raw_query: str, pairs: Sequence[tuple[str, str]]) -> bool:
        """`verify` for a request as received: ``raw_query`` as in the request line and
        its decoded ``pairs``. A URL signed as `signed_query` reads it is checked without
        re-encoding anything; any other query is canonicalised as in `verify`."""
        return self.signed_query(path, raw_query) is not None or self.verify(path, pairs)

    def signed_query(self, path: str, raw_query: str) -> str | None:
        """The canonical query of a URL signed as `sign_url` signs (or any sender that
        keeps the canonical order and appends ``sig``), when its signature matches: the
        raw query before its last ``&sig=``, which is then the canonical query itself.
        None when the signature does not match it, or the URL is in no such form (then
        only `verify_request` can tell). Nothing is decoded.

        Only a canonical string can match (no signer signs anything else), whose pairs
        decode to exactly the request's."""
        if raw_query.startswith(_SIG_FIRST):
            head, candidate = "", raw_query[len(_SIG_FIRST) :]
        else:
            head, found, candidate = raw_query.rpartition(_SIG_AFTER)
            if not found:
                return None
        if "&" not in candidate and self._matches(path + "?" + head, candidate):
            return head
        return None

    def _matches(self, canonical: str, signature: str) -> bool:
        # compare_digest only takes ASCII str, and the value is attacker-controlled.
        candidate = signature.encode("utf-8")
        message = canonical.encode("utf-8")
        matched = False
        # Every key is tried even after a match, so the response time does not reveal
        # which key, old or new, signed the URL. `_Keyed.signature`, written out: a call
        # per key costs a tenth of checking a signature.
        for keyed in self._keyed:
            inner = keyed.inner.copy()
            inner.update(message)
            outer = keyed.outer.copy()
            outer.update(inner.digest())
            made = b2a_base64(outer.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")
            matched |= compare_digest(made, candidate)
        return matched

    def recipient_token(self, recipient: str) -> str:
        """The recipient token `t` of `recipient`, made with the first key."""
        return self._keyed[0].signature(_TOKEN_PREFIX + recipient.encode("utf-8")).decode("ascii")

    def verify_recipient(self, pairs: Sequence[tuple[str, str]]) -> bool:
        """Whether ``pairs`` hold exactly one ``r`` and one ``t`` that any key made for it."""
        recipients = [value for key, value in pairs if key == RECIPIENT_PARAM]
        tokens = [value for key, value in pairs if key == TOKEN_PARAM]
        if len(recipients) != 1 or len(tokens) != 1:
            return False
        candidate = tokens[0].encode("utf-8")
        message = _TOKEN_PREFIX + recipients[0].encode("utf-8")
        matched = False
        # Every key, even after a match: the time taken does not tell which one made it.
        for keyed in self._keyed:
            matched |= compare_digest(keyed.signature(message), candidate)
        return matched

    def sign_url(self, url: str) -> str:
        """Return ``url`` with its query in canonical order and a fresh ``sig`` appended.

        ``url`` is either ``PATH?QUERY`` or an absolute ``http(s)://host/PATH?QUERY``;
        scheme, host and fragment are kept, and any existing ``sig`` is replaced.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("", "http", "https"):
            raise ValueError(f"cannot sign a {parts.scheme!r} URL: {url!r}")
        if bool(parts.scheme) != bool(parts.netloc):
            raise ValueError(f"an absolute URL needs both a scheme and a host: {url!r}")
        if not parts.path.startswith("/"):
            raise ValueError(f"URL path must start with '/': {url!r}")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = _canonical_query(pairs)
        sig = SIG_PARAM + "=" + self.signature(parts.path, pairs)
        query = query + "&" + sig if query else sig
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
