"""The OpenAPI description: served without a token, valid, true to the routes and to the code's
constants and error catalogue, and fuzzed with schemathesis."""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from openapi_spec_validator import validate
from schemathesis import checks

from file_uploader import __version__
from file_uploader.api.errors import CATALOGUE
from file_uploader.api.openapi import DOCUMENT, OPENAPI_PATH
from file_uploader.api.params import MAX_FILE_EXPIRES_IN
from file_uploader.api.public import MAX_PAGE
from file_uploader.api.tus import TUS_VERSION
from file_uploader.app import create_app
from file_uploader.formats import FALSE_WORDS, TRUE_WORDS
from file_uploader.sizes import LIST_PAGE_SIZE
from file_uploader.storage.thumbnails import THUMBNAIL_SIZES

from ..helpers import new_token

WEB_PAGE = {"/", "/static"}
METHODS = {"get", "put", "head", "delete", "post", "patch", "options"}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or what its $ref points to in the document."""
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = DOCUMENT["components"][kind][name]
    return node


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def parameter(path: str, method: str, name: str) -> dict[str, Any]:
    item = DOCUMENT["paths"][path]
    for candidate in [*item.get("parameters", []), *item[method].get("parameters", [])]:
        if resolve(candidate)["name"] == name:
            return resolve(candidate)
    raise LookupError(name)


async def test_openapi_json_is_served_without_a_token(client):
    response = await client.get(OPENAPI_PATH)
    assert response.status == 200
    assert await response.json() == DOCUMENT


def test_openapi_json_is_valid_openapi_3():
    validate(DOCUMENT)


def test_openapi_version_is_the_packages():
    assert DOCUMENT["info"]["version"] == __version__


async def test_openapi_paths_and_methods_match_the_routes(settings):
    app = await create_app(settings)  # never started: its route table is all this needs
    # The web page (/ and its /static/ files) is for browsers, not part of the API.
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource.canonical not in WEB_PAGE
    }
    assert {(path, method) for path, method, _ in operations()} == routes


def test_thumbnail_sizes_are_the_ones_the_code_makes():
    for path in ("/api/files/{name}", "/p/{id}", "/s/{link}"):
        assert parameter(path, "get", "thumbnail")["schema"]["enum"] == list(THUMBNAIL_SIZES)


def test_page_limits_are_the_ones_the_code_enforces():
    assert parameter("/api/files", "get", "limit")["schema"]["maximum"] == LIST_PAGE_SIZE
    assert parameter("/api/public", "get", "limit")["schema"]["maximum"] == MAX_PAGE


def test_yes_or_no_parameters_take_the_words_the_code_reads():
    words = list(TRUE_WORDS + FALSE_WORDS)
    assert parameter("/api/files/{name}", "get", "inline")["schema"]["enum"] == words
    assert parameter("/api/files/{name}", "put", "X-Public")["schema"]["enum"] == words
    assert parameter("/api/files/{name}", "delete", "recursive")["schema"]["enum"] == words
    assert parameter("/api/files", "get", "details")["schema"]["enum"] == words


def test_tus_version_is_the_one_the_code_speaks():
    assert parameter("/api/uploads/{upload_id}", "patch", "Tus-Resumable")["schema"]["enum"] == [TUS_VERSION]


def test_error_codes_are_the_catalogues():
    code = DOCUMENT["components"]["schemas"]["ErrorBody"]["properties"]["code"]
    assert code["enum"] == sorted(CATALOGUE)


def documented_error_statuses() -> set[int]:
    """Every status an operation documents with the JSON error body."""
    statuses = set()
    for _, _, operation in operations():
        for status, response in operation["responses"].items():
            content = resolve(response).get("content", {}).get("application/json", {})
            if content.get("schema") == {"$ref": "#/components/schemas/Error"}:
                statuses.add(int(status))
    return statuses


def test_every_documented_error_status_has_catalogue_entries():
    assert documented_error_statuses() <= {entry.status for entry in CATALOGUE.values()}


def test_every_catalogue_status_is_documented_where_it_can_happen():
    # 405 and 500 can happen anywhere and are the router's or the unforeseen: not per operation.
    anywhere = {405, 500}
    assert {entry.status for entry in CATALOGUE.values()} - anywhere <= documented_error_statuses()


# tus PATCH bodies are raw bytes, as application/octet-stream ones are.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


FUZZ = hypothesis.settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
)


def fuzz(operation, base_url: str, token: str) -> set[int]:
    """Send `operation` the requests hypothesis generates; return the statuses seen."""
    seen: set[int] = set()

    @hypothesis.given(case=operation.as_strategy())
    @FUZZ
    def conforms(case):
        response = case.call_and_validate(
            base_url=base_url, headers={"X-Auth-Token": token}, checks=CHECKS, timeout=10
        )
        seen.add(response.status_code)

    conforms()
    return seen


# schemathesis' own pytest plugin does not run under pytest 9, so each
# operation's hypothesis strategy is driven here, against one gateway process
# (starting one per operation costs more than the fuzzing). Bounded in examples.
def test_the_running_gateway_conforms_to_its_openapi_description(gateway_process):
    token = new_token()
    statuses = {operation.label: fuzz(operation, gateway_process, token) for operation in OPERATIONS}
    print(statuses)
    # The fuzzing reached both sides of the API: files stored and names refused.
    assert 204 in statuses["PUT /api/files/{name}"]
    assert 400 in statuses["PUT /api/files/{name}"]
    assert all(statuses.values())


def test_the_longest_file_expiry_is_the_one_the_code_takes():
    assert parameter("/api/files/{name}", "put", "X-Expires-In")["schema"]["maximum"] == MAX_FILE_EXPIRES_IN
