"""The OpenAPI description: served without a token, true to the routes, and fuzzed with schemathesis."""

from __future__ import annotations

import hypothesis
import schemathesis
from schemathesis import checks

from file_uploader.api.openapi import OPENAPI_PATH, spec

from ..helpers import new_token

WEB_PAGE = {"/", "/static"}
METHODS = {"get", "put", "head", "delete", "post", "patch", "options"}


async def test_openapi_json_is_served_without_a_token(client):
    response = await client.get(OPENAPI_PATH)
    assert response.status == 200
    assert await response.json() == spec()


async def test_openapi_paths_and_methods_match_the_routes(app_for, settings):
    app = await app_for(settings)
    # The web page (/ and its /static/ files) is for browsers, not part of the API.
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource.canonical not in WEB_PAGE
    }
    described = {
        (path, method) for path, item in spec()["paths"].items() for method in item if method in METHODS
    }
    assert described == routes


# tus PATCH bodies are raw bytes, as application/octet-stream ones are.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
SCHEMA = schemathesis.openapi.from_dict(spec())
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
