"""API tokens as the settings give them: each with a name and its scopes.

`ATOPEN_API_TOKENS` names each token and gives it scopes (`NAME:TOKEN:read+data`);
every token in `ATOPEN_API_TOKEN` has full access and is named `ATOPEN_API_TOKEN`.
Which scope each route needs is `server/api/access.py`'s.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

LEGACY_TOKEN_NAME = "ATOPEN_API_TOKEN"  # noqa: S105 - a name, not a password
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Scope(StrEnum):
    READ = "read"
    DATA = "data"
    BLOCKS = "blocks"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token, its name (what logs and the audit show) and its scopes."""

    name: str
    token: str = field(repr=False)
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def scope_names(self) -> list[str]:
        return [scope.value for scope in Scope if scope in self.scopes]


def parse_scoped_tokens(variable: str, raw: str) -> tuple[ApiToken, ...]:
    """`NAME:TOKEN:SCOPES,...`, scopes joined by `+`. The token may contain `:` (the name
    ends at the first one, the scopes start after the last). Errors name the entry by
    its position and name, never by its token. ValueError when malformed."""
    tokens: list[ApiToken] = []
    for position, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        where = f"{variable}: entry {position}"
        name, _, rest = entry.partition(":")
        token, _, scopes_text = rest.rpartition(":")
        if not name or not token or not scopes_text:
            raise ValueError(f"{where}: expected NAME:TOKEN:SCOPES (scopes joined by +)")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{where}: the name {name!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
            )
        where = f"{variable}: entry {position} ({name})"
        if any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError(f"{where}: the token has a space or a control character")
        scopes: set[Scope] = set()
        for scope in scopes_text.split("+"):
            try:
                scopes.add(Scope(scope.strip()))
            except ValueError:
                known = ", ".join(s.value for s in Scope)
                raise ValueError(f"{where}: unknown scope {scope!r} (known: {known})") from None
        tokens.append(ApiToken(name, token, frozenset(scopes)))
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{variable}: each name may be given once ({', '.join(twice)} twice)")
    if len({t.token for t in tokens}) != len(tokens):
        raise ValueError(f"{variable}: two entries have the same token")
    return tuple(tokens)


def all_tokens(full_access: Iterable[str], scoped: Iterable[ApiToken]) -> tuple[ApiToken, ...]:
    """Every token the API takes: those of `ATOPEN_API_TOKEN` with full access, then the
    named ones."""
    legacy = frozenset({Scope.ADMIN})
    return (*(ApiToken(LEGACY_TOKEN_NAME, t, legacy) for t in full_access), *scoped)


def token_of(authorization: str, tokens: Iterable[ApiToken]) -> ApiToken | None:
    """The token an `Authorization: Bearer ...` header carries, if it is one of `tokens`.

    Every token is compared (in constant time), so timing tells neither which one
    matched nor how close a guess came. Header bytes that are not UTF-8 reach us as
    surrogates; they are compared as the bytes they were, and match nothing."""
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return None
    given = presented.encode("utf-8", "surrogateescape")
    found = None
    for candidate in tokens:
        if hmac.compare_digest(given, candidate.token.encode()) and found is None:
            found = candidate
    return found
