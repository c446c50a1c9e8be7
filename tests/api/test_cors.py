"""CORS_ORIGINS over real HTTP: preflights without a token, exposed headers, errors a script can read.

What a browser does with these answers is tested in Chromium by
test_cross_origin.py; here every header is checked as sent.
"""

from __future__ import annotations

import dataclasses

import pytest

APP = "https://app.example.com"
TUS = {"Tus-Resumable": "1.0.0"}
# What tus-js-client's preflights ask for (creation, then PATCH), as Chromium sends them.
TUS_HEADERS = "content-type,tus-resumable,upload-length,upload-metadata,upload-offset,x-auth-token"


@pytest.fixture
async def cors(aiohttp_client, app_for, settings):
    """The gateway with CORS for one origin, and a small MAX_FILE_SIZE for the 413s."""
    app = await app_for(dataclasses.replace(settings, cors_origins=(APP,), max_file_size=1000))
    return await aiohttp_client(app)


def preflight(method: str, headers: str = "x-auth-token", origin: str = APP) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/api/files/report.pdf", "PUT", "x-auth-token,content-type,x-public"),
        ("/api/files/report.pdf", "DELETE", "x-auth-token"),
        ("/api/files", "GET", "x-auth-token,x-request-id"),
        ("/api/uploads/", "POST", TUS_HEADERS),
        ("/api/uploads/abc", "PATCH", TUS_HEADERS),
        ("/api/uploads/abc", "HEAD", "tus-resumable,x-auth-token"),
        ("/api/uploads/abc", "POST", "x-http-method-override," + TUS_HEADERS),
    ],
)
async def test_a_preflight_needs_no_token_and_allows_what_the_api_and_tus_send(cors, path, method, headers):
    response = await cors.options(path, headers=preflight(method, headers))
    assert response.status == 204, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert method.lower() in listed(response.headers["Access-Control-Allow-Methods"])
    assert listed(headers) <= listed(response.headers["Access-Control-Allow-Headers"])
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Tus-Version" not in response.headers  # a preflight, not tus discovery


async def test_a_preflight_from_an_origin_not_listed_is_refused(cors):
    response = await cors.options("/api/files/x", headers=preflight("PUT", origin="https://evil.example"))
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_answers_to_an_allowed_origin_expose_the_tus_and_api_headers(cors, auth):
    headers = {**auth, **TUS, "Origin": APP}
    created = await cors.post(
        "/api/uploads/", headers={**headers, "Upload-Length": "3", "Upload-Metadata": "filename YS50eHQ="}
    )
    assert created.status == 201
    assert created.headers["Access-Control-Allow-Origin"] == APP
    exposed = listed(created.headers["Access-Control-Expose-Headers"])
    assert {"location", "upload-offset", "upload-length", "upload-expires", "etag", "x-request-id"} <= exposed
    assert {"tus-resumable", "tus-version", "tus-max-size", "retry-after", "content-disposition"} <= exposed
    head = await cors.head(created.headers["Location"].split(str(cors.port), 1)[1], headers=headers)
    assert head.headers["Access-Control-Allow-Origin"] == APP and head.headers["Upload-Offset"] == "0"
    # A download, streamed: the headers are on it too.
    assert (await cors.put("/api/files/a.txt", data=b"abc", headers=auth)).status == 204
    got = await cors.get("/api/files/a.txt", headers={**auth, "Origin": APP})
    assert got.headers["Access-Control-Allow-Origin"] == APP and await got.read() == b"abc"
    # tus discovery from a script is an ordinary (preflighted) OPTIONS: it gets them as well.
    discovery = await cors.options("/api/uploads/", headers={"Origin": APP})
    assert discovery.headers["Tus-Version"] == "1.0.0"
    assert discovery.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/files", {}, 401),  # no token: refused by the middleware
        ("PUT", "/api/files/big.bin", {"Content-Length": "5000"}, 413),  # by the handler's checks
        (
            "PUT",
            "/api/files/big.bin",
            {"Content-Length": "5000", "Expect": "100-continue"},
            413,
        ),  # expect handler
        ("GET", "/api/files/missing", {}, 404),
        ("POST", "/api/uploads/", {"Tus-Resumable": "0.2"}, 412),
    ],
    ids=["401", "413", "413-expect", "404", "412"],
)
async def test_errors_are_readable_by_the_allowed_origin(cors, auth, method, path, headers, status):
    token = {} if status == 401 else auth
    body = b"x" * 5000 if "Content-Length" in headers else None
    response = await cors.request(method, path, headers={**token, **headers, "Origin": APP}, data=body)
    assert response.status == status
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "x-request-id" in listed(response.headers["Access-Control-Expose-Headers"])
    assert "error" in await response.json()


async def test_another_origins_requests_get_no_cors_headers(cors, auth):
    response = await cors.get("/api/files", headers={**auth, "Origin": "https://evil.example"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]  # a cache must not hand this answer to APP


async def test_a_star_allows_any_origin_and_never_credentials(aiohttp_client, app_for, settings, auth):
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, cors_origins=("*",))))
    response = await client.options("/api/files/x", headers=preflight("PUT", origin="https://anyone.example"))
    assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
    response = await client.get("/api/files", headers={**auth, "Origin": "https://anyone.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Vary" not in response.headers


async def test_without_cors_origins_nothing_changes(client, auth):
    """No CORS headers at all; a preflight is an ordinary OPTIONS (401 here: it has no token)."""
    response = await client.options("/api/files/x", headers=preflight("PUT"))
    assert response.status == 401
    response = await client.get("/api/files", headers={**auth, "Origin": APP})
    assert response.status == 200
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "Vary" not in response.headers
