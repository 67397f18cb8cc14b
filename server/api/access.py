"""Who may do what in the management API: named tokens with scopes, and the scope each
route needs.

Tokens come from two settings. `ATOPEN_API_TOKENS` names each token and gives it
scopes (`NAME:TOKEN:read+data`); every token in `ATOPEN_API_TOKEN` has full access
and is named `ATOPEN_API_TOKEN` (the name is what the audit log shows; the token
itself is never written anywhere).

The scope a request needs comes from its method and its route's path template, by
the rule table `RULES`: the first rule that matches decides. New routes fall into it
without edits as long as their path starts with a known collection; a route no rule
covers needs `admin`, so a forgotten write is closed rather than open (and the tests
fail on it: every route the app registers must match a rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from server.api.errors import ApiError, json_response
from server.api_tokens import ApiToken, Scope, token_of

# What each route needs.


@dataclass(frozen=True, slots=True)
class Rule:
    """Requests whose method is in `methods` (None: any) and whose route's path template
    matches `path` need `scope`; None means any valid token."""

    what: str
    methods: frozenset[str] | None
    path: re.Pattern[str]
    scope: Scope | None


def _rule(what: str, methods: str | None, path: str, scope: Scope | None) -> Rule:
    chosen = None if methods is None else frozenset(methods.split())
    return Rule(what, chosen, re.compile(path), scope)


_READS = "GET HEAD"
# First match wins: order matters.
RULES: tuple[Rule, ...] = (
    _rule("the audit log", None, r"/api/v1/audit(/.*)?", Scope.ADMIN),
    _rule("who the token is", None, r"/api/v1/me", None),
    _rule("any read", _READS, r"/api/v1/.*", Scope.READ),
    _rule("a preview", "POST", r"/api/v1/.*/preview", Scope.READ),
    _rule(
        "recipient and shop data",
        None,
        r"/api/v1/(profiles|events|inventory|stores|segments?)(/.*)?",
        Scope.DATA,
    ),
    _rule(
        "blocks and what signs for them", None, r"/api/v1/(blocks|sign|tokens)(/.*)?", Scope.BLOCKS
    ),
    # The catch-all that answers 404 or 405 for paths no route serves.
    _rule("a path no route serves", None, r"/api/v1/\{path\}", None),
)


def rule_for(method: str, path_template: str) -> Rule | None:
    """The first rule for a request with `method` to the route `path_template`."""
    for rule in RULES:
        if (rule.methods is None or method in rule.methods) and rule.path.fullmatch(path_template):
            return rule
    return None


def needed_scope(method: str, path_template: str) -> Scope | None:
    """The scope a request needs (None: any valid token); `admin` when no rule says."""
    rule = rule_for(method, path_template)
    return Scope.ADMIN if rule is None else rule.scope


def route_template(request: web.Request) -> str:
    """The path template of the route that serves `request` (`/api/v1/blocks/{id}`):
    ids in the path cannot make a request look like another route's."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def authenticate(request: web.Request, tokens: Iterable[ApiToken]) -> ApiToken:
    """The request's token: 401 when it has none that is valid."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer TOKEN)")
    token = token_of(authorization, tokens)
    if token is None:
        raise ApiError(401, "unauthorized", "invalid bearer token")
    return token


def require_scope(request: web.Request, token: ApiToken) -> None:
    """403 naming the scope, unless `token` may make this request."""
    scope = needed_scope(request.method, route_template(request))
    if scope is not None and not token.allows(scope):
        raise ApiError(
            403,
            "forbidden",
            f"the token {token.name!r} lacks the {scope.value!r} scope this request needs",
            [{"field": "scope", "message": f"needs {scope.value} (or admin)"}],
        )


# The token an API request was let in with (none on the public document's requests).
API_TOKEN = web.RequestKey("api_token", ApiToken)
routes = web.RouteTableDef()


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    """The name and scopes of the token the request came with."""
    token = request[API_TOKEN]
    return json_response({"name": token.name, "scopes": token.scope_names()})
