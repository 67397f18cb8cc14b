"""The OpenAPI document (`server/openapi.json`) against the running app.

It must be valid OpenAPI, served without a token, list exactly the routes the app
registers, and describe what the handlers really answer: every status a handler can
produce is documented, and real answers validate against the documented schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.web import DynamicResource, PlainResource
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from sample_blocks import CART_REMINDER
from support import AUTH, decode, signed

from renderers.layers import LAYER_KINDS
from renderers.layers.text import DEFAULT_FACE
from server.api.openapi import DOCUMENT
from server.settings import Settings
from server.web.app import TEMPLATES_DIR

Client = TestClient[Any, Any]
METHODS = ("get", "put", "post", "patch", "delete")
API = "/api/v1/"
PUBLIC_API = {("get", "/api/v1/openapi.json")}
# aiohttp's `{name:regex}` (the regex may itself hold `{m,n}`) is the document's `{name}`.
_TYPED_PARAM = re.compile(r"\{(\w+):(?:[^{}]|\{[^{}]*\})*\}")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def operations(document: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): item[method]
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    }


def resolve(document: Mapping[str, Any], node: Mapping[str, Any]) -> Any:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validator(document: Mapping[str, Any], schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator for `schema` whose `#/components/...` references resolve in the document."""
    return Draft202012Validator({**schema, "components": document["components"]})


def schema_of(document: Mapping[str, Any], name: str) -> Draft202012Validator:
    return validator(document, {"$ref": f"#/components/schemas/{name}"})


def normalise(path: str) -> str:
    """`/i/{block}.{ext:png|jpg}` (aiohttp) as an OpenAPI path template: `/i/{block}.{ext}`."""
    return _TYPED_PARAM.sub(r"{\1}", path)


def route_template(resource: Any) -> str:
    info = resource.get_info()
    if isinstance(resource, PlainResource):
        return str(info["path"])
    assert isinstance(resource, DynamicResource), f"unexpected resource {resource!r}"
    return normalise(str(info["formatter"]))


# ------------------------------------------------------------------ the document itself


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_document_is_pretty_printed_with_two_spaces(document: dict[str, Any]) -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


async def test_served_without_a_token(client: Client, document: dict[str, Any]) -> None:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document


async def test_documents_exactly_the_registered_routes(
    client: Client, document: dict[str, Any]
) -> None:
    registered = {
        (route.method.lower(), route_template(route.resource))
        for route in client.app.router.routes()
        # "*" is no operation: it answers the API's JSON 404/405 for paths no route serves.
        if route.method not in ("HEAD", "*") and route.resource is not None
    }
    documented = set(operations(document))
    assert registered - documented == set(), "routes without documentation"
    assert documented - registered == set(), "documented routes the app does not serve"


def test_route_template_normalisation() -> None:
    assert normalise("/i/{block}.{ext:png|jpg|jpeg|gif}") == "/i/{block}.{ext}"
    assert normalise(r"/x/{n:\d{2,3}}/y/{z}") == "/x/{n}/y/{z}"
    router = web.Application().router
    resource = router.add_resource("/i/{block}.{ext:png|jpg|jpeg|gif}")
    assert route_template(resource) == "/i/{block}.{ext}"


# ------------------------------------------------------------------ security and statuses


def test_bearer_everywhere_in_the_api_but_the_document(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}]
    for (method, path), operation in operations(document).items():
        if path.startswith(API) and (method, path) not in PUBLIC_API:
            assert "security" not in operation, f"{method} {path} overrides the bearer scheme"
            assert "401" in operation["responses"], f"{method} {path} lacks 401"
            assert "500" in operation["responses"], f"{method} {path} lacks 500"
        elif (method, path) == ("get", "/metrics"):
            assert operation["security"] == [{"bearer": []}]
            assert "401" in operation["responses"]
        else:
            assert operation.get("security") == [], f"{method} {path} must say security: []"
            assert "401" not in operation["responses"]


def test_email_and_operations_routes_are_tagged(document: dict[str, Any]) -> None:
    tags = {(m, p): set(op.get("tags", ())) for (m, p), op in operations(document).items()}
    assert tags[("get", "/i/{block}.{ext}")] == {"email"}
    assert tags[("get", "/c/{block}")] == {"email"}
    assert tags[("get", "/healthz")] == {"operations"}
    assert tags[("get", "/readyz")] == {"operations"}
    declared = {tag["name"] for tag in document["tags"]}
    assert set().union(*tags.values()) <= declared


def test_statuses_the_handlers_can_return_are_documented(document: dict[str, Any]) -> None:
    """Read off the handlers: a body can be too large or invalid; ids are validated;
    single resources can be missing."""
    may_be_missing = {
        ("get", "/api/v1/blocks/{id}"),
        ("delete", "/api/v1/blocks/{id}"),
        ("post", "/api/v1/blocks/{id}/preview"),
        ("get", "/api/v1/profiles/{rid}"),
        ("get", "/api/v1/inventory/{sku}"),
        ("patch", "/api/v1/inventory/{sku}"),
        ("delete", "/api/v1/inventory/{sku}"),
        ("get", "/api/v1/stores/{id}"),
        ("delete", "/api/v1/stores/{id}"),
        ("get", "/api/v1/blocks/{id}/stats"),
    }
    success = {
        ("put", "/api/v1/blocks/{id}"): {"200", "201"},
        ("delete", "/api/v1/blocks/{id}"): {"204"},
        ("delete", "/api/v1/profiles/{rid}"): {"204"},
        ("delete", "/api/v1/inventory/{sku}"): {"204"},
        ("put", "/api/v1/stores/{id}"): {"200", "201"},
        ("delete", "/api/v1/stores/{id}"): {"204"},
        ("post", "/api/v1/events"): {"202"},
        ("get", "/c/{block}"): {"302"},
        ("get", "/i/{anything}"): {"404"},
        ("get", "/readyz"): {"200", "503"},
    }
    for key, operation in operations(document).items():
        method, path = key
        statuses = set(operation["responses"])
        assert success.get(key, {"200"}) <= statuses, f"{method} {path}"
        if "requestBody" in operation:
            assert {"413", "422"} <= statuses, f"{method} {path} takes a body"
        if "{rid}" in path or "{sku}" in path:
            assert "422" in statuses, f"{method} {path} validates its id"
        if key in may_be_missing or path.startswith(("/i/", "/c/")):
            assert "404" in statuses, f"{method} {path} can answer 404"
        for status, response in operation["responses"].items():
            for media, content in resolve(document, response).get("content", {}).items():
                if media == "application/json" and status[0] in "45" and path.startswith(API):
                    assert content["schema"] == {"$ref": "#/components/schemas/Error"}


def test_patch_accepts_merge_patch_and_json(document: dict[str, Any]) -> None:
    for (method, path), operation in operations(document).items():
        if method == "patch":
            media = set(operation["requestBody"]["content"])
            assert media == {"application/merge-patch+json", "application/json"}, path


def test_preview_answers_images_or_the_trace(document: dict[str, Any]) -> None:
    answer = operations(document)[("post", "/api/v1/blocks/{id}/preview")]["responses"]["200"]
    assert set(answer["content"]) == {"image/png", "image/jpeg", "image/gif", "application/json"}
    assert "X-Atopen-Variant" in answer["headers"]


def test_email_routes_document_their_query(document: dict[str, Any]) -> None:
    signed = {"r", "m.NAME", "tz", "dpr", "sig"}
    # A click may carry a poll's vote too.
    for path, query in (("/i/{block}.{ext}", signed), ("/c/{block}", signed | {"vote"})):
        params = [resolve(document, p) for p in document["paths"][path]["get"]["parameters"]]
        names = {p["name"] for p in params if p["in"] == "query"}
        assert names == query, path
    image = document["paths"]["/i/{block}.{ext}"]["get"]["responses"]
    assert {"Cache-Control", "Pragma", "Expires", "X-Atopen-Variant"} <= set(
        image["200"]["headers"]
    )
    assert set(image["404"]["content"]) == {"image/gif"}
    click = document["paths"]["/c/{block}"]["get"]["responses"]
    assert "Location" in click["302"]["headers"]


# ------------------------------------------------------------------ block definition schemas


def test_every_layer_kind_is_documented_with_its_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    mapping = schemas["Layer"]["discriminator"]["mapping"]
    assert set(mapping) == set(LAYER_KINDS)
    assert len(schemas["Layer"]["oneOf"]) == len(LAYER_KINDS)
    for name, kind in LAYER_KINDS.items():
        schema = resolve(document, {"$ref": mapping[name]})
        assert schema["properties"]["type"] == {"const": name}
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]) == {"type", *(f.name for f in kind.fields)}, name
        required = {"type", *(f.name for f in kind.fields if f.required)}
        assert set(schema["required"]) == required, name
        for spec in kind.fields:
            prop = schema["properties"][spec.name]
            if spec.required or spec.default is None:
                assert "default" not in prop, f"{name}.{spec.name}"
            elif isinstance(spec.default, str | int | float):
                assert prop.get("default") == spec.default, f"{name}.{spec.name}"
            else:
                assert "default" in prop, f"{name}.{spec.name} should state its default"
    assert schemas["TextLayer"]["properties"]["font"]["default"] == DEFAULT_FACE.name
    assert schemas["TextLayer"]["properties"]["color"]["default"] == "#000000"


def test_starter_blocks_match_the_block_schema(document: dict[str, Any]) -> None:
    block_schema = schema_of(document, "BlockDefinition")
    starters = sorted((TEMPLATES_DIR / "blocks").glob("*.json"))
    assert starters
    for path in starters:
        errors = list(block_schema.iter_errors(json.loads(path.read_text())))
        assert errors == [], f"{path.name}: {[e.message for e in errors]}"
    assert list(block_schema.iter_errors(CART_REMINDER)) == []


@pytest.mark.parametrize(
    "definition",
    [
        {"width": 10, "height": 10},  # no default
        {**CART_REMINDER, "colour": "red"},  # unknown field
        {**CART_REMINDER, "width": 0},
        {**CART_REMINDER, "format": "webp"},
        {**CART_REMINDER, "default": {"layers": [{"type": "fill"}], "link": "https://a.example/"}},
        {**CART_REMINDER, "default": {"layers": [], "link": "https://a.example/"}},
        {
            **CART_REMINDER,
            "default": {
                "layers": [{"type": "rect", "box": [0, 0, 0, 1], "color": "red"}],
                "link": "https://a.example/",
            },
        },
        {
            **CART_REMINDER,
            "variants": [{"name": "default", "layers": [{"type": "fill", "color": "red"}]}],
        },
    ],
)
async def test_definitions_the_schema_rejects_the_server_rejects(
    client: Client, document: dict[str, Any], definition: dict[str, Any]
) -> None:
    assert list(schema_of(document, "BlockDefinition").iter_errors(definition)) != []
    response = await client.put("/api/v1/blocks/rejected", json=definition, headers=AUTH)
    assert response.status == 422
    assert list(schema_of(document, "Error").iter_errors(await response.json())) == []


# ------------------------------------------------------------------ real answers conform


class Conformance:
    """Sends requests and checks each answer against the operation's documented response."""

    def __init__(self, client: Client, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    async def check(
        self,
        method: str,
        template: str,
        url: str,
        status: int,
        *,
        auth: bool = True,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        request_schema: bool = True,
    ) -> Any:
        operation = self.document["paths"][template][method]
        send_headers = {**(AUTH if auth else {})}
        if json_body is not None:
            send_headers["Content-Type"] = "application/json"
        send_headers.update(headers or {})
        if json_body is not None and request_schema and 200 <= status < 300:
            media = operation["requestBody"]["content"]
            schema = next(iter(media.values()))["schema"]
            errors = list(validator(self.document, schema).iter_errors(json_body))
            assert errors == [], f"{method} {url}: the documented schema rejects a good body"
        response = await self.client.request(
            method.upper(),
            url,
            data=None if json_body is None else json.dumps(json_body),
            headers=send_headers,
            allow_redirects=False,
        )
        raw = await response.read()
        assert response.status == status, raw[:500]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} answered an undocumented {status}"
        documented = resolve(self.document, documented)
        assert "X-Request-Id" in response.headers
        content = documented.get("content", {})
        if not raw and status in (204, 302):
            assert content == {}
        else:
            media = response.content_type
            assert media in content, f"{method} {template} {status}: {media} not documented"
            if media == "application/json":
                body = json.loads(raw)
                errors = list(validator(self.document, content[media]["schema"]).iter_errors(body))
                assert errors == [], f"{method} {url} {status}: {[e.message for e in errors]}"
            elif media.startswith("image/"):
                decode(raw)
        if response.content_type != "application/json":
            for name in documented.get("headers", {}):
                assert name in response.headers, f"{method} {template} {status}: no {name}"
        self.seen.add((method, template, status))
        return json.loads(raw) if response.content_type == "application/json" else raw


async def test_real_answers_match_the_document(client: Client, document: dict[str, Any]) -> None:
    check = Conformance(client, document).check
    block = "/api/v1/blocks/{id}"
    profile = "/api/v1/profiles/{rid}"
    item = "/api/v1/inventory/{sku}"

    await check("get", "/api/v1/openapi.json", "/api/v1/openapi.json", 200, auth=False)
    await check("get", "/api/v1/blocks", "/api/v1/blocks", 401, auth=False)
    await check("put", block, "/api/v1/blocks/hero", 201, json_body=CART_REMINDER)
    stored = await check("put", block, "/api/v1/blocks/hero", 200, json_body=CART_REMINDER)
    assert stored["version"] == 2
    await check("put", block, "/api/v1/blocks/hero", 422, json_body={"width": 1})
    await check("put", block, "/api/v1/blocks/hero", 422, json_body=None)
    await check("get", block, "/api/v1/blocks/hero", 200)
    await check("get", block, "/api/v1/blocks/none", 404)
    await check("get", "/api/v1/blocks", "/api/v1/blocks", 200)

    preview = "/api/v1/blocks/{id}/preview"
    await check("post", preview, "/api/v1/blocks/hero/preview", 200, json_body={})
    trace = await check(
        "post",
        preview,
        "/api/v1/blocks/hero/preview",
        200,
        json_body={"recipient": "u1", "client": {"kind": "gmail_proxy"}, "dpr": 2},
        headers={"Accept": "application/json"},
    )
    assert trace["variant"] == "default"
    await check("post", preview, "/api/v1/blocks/hero/preview", 422, json_body={"dpr": 4})
    await check("post", preview, "/api/v1/blocks/none/preview", 404, json_body={})

    await check("put", profile, "/api/v1/profiles/u1", 200, json_body={"first_name": "Ann"})
    await check(
        "patch",
        profile,
        "/api/v1/profiles/u1",
        200,
        json_body={"tz": "Europe/Warsaw"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    await check("patch", profile, "/api/v1/profiles/u1", 422, json_body={"tz": "Mars/Base"})
    await check("get", profile, "/api/v1/profiles/u1", 200)
    await check("get", profile, "/api/v1/profiles/nobody", 404)
    await check("get", profile, "/api/v1/profiles/ann@example.com", 422)

    events = "/api/v1/events"
    one = {"recipient": "u1", "type": "purchase", "id": "o-1", "props": {"total": 10}}
    await check("post", events, events, 202, json_body=one)
    answer = await check("post", events, events, 202, json_body=[one, {**one, "id": "o-2"}])
    assert answer == {
        "received": 2,
        "stored": 1,
        "skipped": [{"index": 0, "reason": "an event with this id is already stored"}],
    }
    await check("post", events, events, 422, json_body=[{"recipient": "a@b", "type": "x"}])
    await check("post", events, events, 422, json_body=[])

    trace = await check(
        "post",
        preview,
        "/api/v1/blocks/hero/preview",
        200,
        json_body={"recipient": "u1"},
        headers={"Accept": "application/json"},
    )
    assert trace["variant"] == "thanks"

    await check("put", item, "/api/v1/inventory/sku-1", 200, json_body={"stock": 3, "x": [1]})
    await check("put", item, "/api/v1/inventory/sku-1", 422, json_body={"stock": -1})
    await check("patch", item, "/api/v1/inventory/sku-1", 200, json_body={"stock": None})
    await check("patch", item, "/api/v1/inventory/sku-2", 404, json_body={"stock": 1})
    await check("get", item, "/api/v1/inventory/sku-1", 200)
    await check("get", item, "/api/v1/inventory/sku%201", 422)
    await check("delete", item, "/api/v1/inventory/sku-1", 204)
    await check("delete", item, "/api/v1/inventory/sku-1", 404)
    await check("get", item, "/api/v1/inventory/sku-1", 404)
    bulk = "/api/v1/inventory"
    await check("post", bulk, bulk, 200, json_body=[{"sku": "a", "stock": 1}, {"sku": "b"}])
    await check("post", bulk, bulk, 422, json_body=[{"stock": 1}])

    one_store = "/api/v1/stores/{id}"
    soho = {"name": "Soho", "address": "1 Soho Square", "lat": 51.51, "lon": -0.13}
    await check("put", one_store, "/api/v1/stores/soho", 201, json_body=soho)
    await check("put", one_store, "/api/v1/stores/soho", 422, json_body={"name": "Soho"})
    await check("get", one_store, "/api/v1/stores/soho", 200)
    stores = "/api/v1/stores"
    await check("post", stores, stores, 200, json_body=[{"id": "camden", **soho}])
    page = await check("get", stores, "/api/v1/stores?limit=1", 200)
    assert page == {"stores": [{"id": "camden", "store": soho}], "next": "camden"}
    await check("get", stores, "/api/v1/stores?limit=0", 422)
    await check("delete", one_store, "/api/v1/stores/soho", 204)
    await check("get", one_store, "/api/v1/stores/soho", 404)

    sign = "/api/v1/sign"
    urls = await check("post", sign, sign, 200, json_body={"urls": ["/i/hero.png?r=u1"]})
    assert urls["urls"][0].startswith("http://127.0.0.1:8080/i/hero.png?r=u1&sig=")
    await check("post", sign, sign, 422, json_body={"urls": "/i/hero.png"})

    image = "/i/{block}.{ext}"
    await check("get", image, signed("/i/hero.png?r=u1&m.a=b&tz=UTC&dpr=2"), 200, auth=False)
    await check("get", image, "/i/hero.jpeg?r=u1&sig=wrong", 200, auth=False)
    await check("get", image, "/i/none.gif", 404, auth=False)
    await check("get", "/c/{block}", signed("/c/hero?r=u1"), 302, auth=False)
    await check("get", "/c/{block}", "/c/none", 404, auth=False)
    await check("get", "/healthz", "/healthz", 200, auth=False)
    await check("get", "/readyz", "/readyz", 200, auth=False)

    await check("delete", profile, "/api/v1/profiles/u1", 204)
    await check("delete", block, "/api/v1/blocks/hero", 204)
    await check("delete", block, "/api/v1/blocks/hero", 404)


async def test_unknown_api_paths_answer_json_errors(
    client: Client, document: dict[str, Any]
) -> None:
    error = schema_of(document, "Error")
    for method, url, status in (
        ("GET", "/api/v1/nothing-here", 404),
        ("POST", "/api/v1/blocks", 405),
    ):
        response = await client.request(method, url, headers=AUTH)
        assert response.status == status
        assert list(error.iter_errors(await response.json())) == []
        assert "X-Request-Id" in response.headers
        # Without the token, nothing is told about which paths exist.
        anonymous = await client.request(method, url)
        assert anonymous.status == 401
        assert (await anonymous.json())["error"]["code"] == "unauthorized"


async def test_oversized_body_is_the_documented_413(
    make_client: Any, settings: Settings, document: dict[str, Any]
) -> None:
    client = await make_client(replace(settings, api_max_body_bytes=1024))
    response = await client.put("/api/v1/profiles/u1", json={"bio": "x" * 4096}, headers=AUTH)
    assert response.status == 413
    body = await response.json()
    assert body["error"]["code"] == "too_large"
    assert list(schema_of(document, "Error").iter_errors(body)) == []
