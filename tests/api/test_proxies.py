"""PUBLIC_URL and TRUSTED_PROXIES: the origin links start with, and the client address in the log.

Share links, public links (/p/...) and tus Locations all come from one helper
(api/proxies.py); each test reads all three. The gateway runs in-process on a
real socket and the test client is its peer at 127.0.0.1: trusting
127.0.0.1 makes the test client a proxy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest

from file_uploader.settings import Settings, SettingsError

from ..helpers import new_token

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
TUS = {"Tus-Resumable": "1.0.0"}


async def gateway(aiohttp_client, app_for, settings: Settings, **changes):
    return await aiohttp_client(await app_for(dataclasses.replace(settings, **changes)))


async def links(client, headers: dict[str, str] | None = None) -> dict[str, str]:
    """A share link, a public link and a tus Location, each asked for with `headers`."""
    auth = {"X-Auth-Token": new_token(), **(headers or {})}
    assert (await client.put("/api/files/a.txt", data=b"a", headers=auth)).status == 204
    shared = await client.post("/api/files/a.txt/share", headers=auth)
    public = await client.patch("/api/files/a.txt", json={"public": True}, headers=auth)
    created = await client.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Length": "1", "Upload-Metadata": "filename Yg=="}
    )
    assert (shared.status, public.status, created.status) == (200, 200, 201)
    return {
        "share": (await shared.json())["url"],
        "public": (await public.json())["url"],
        "tus": created.headers["Location"],
    }


def origins(found: dict[str, str]) -> set[str]:
    return {url.split("/s/")[0].split("/p/")[0].split("/api/")[0] for url in found.values()}


async def test_links_start_with_the_requests_own_scheme_and_host_by_default(
    aiohttp_client, app_for, settings
):
    client = await gateway(aiohttp_client, app_for, settings)
    assert origins(await links(client)) == {f"http://127.0.0.1:{client.port}"}
    assert origins(await links(client, {"Host": "files.example.com:8080"})) == {
        "http://files.example.com:8080"
    }


async def test_public_url_is_the_origin_of_every_link_whatever_the_request_says(
    aiohttp_client, app_for, settings
):
    client = await gateway(
        aiohttp_client, app_for, settings, public_url="https://files.example.com", trusted_proxies=LOOPBACK
    )
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    found = await links(client, forged)
    assert origins(found) == {"https://files.example.com"}
    assert found["tus"].startswith("https://files.example.com/api/uploads/")
    assert found["share"].startswith("https://files.example.com/s/")
    assert found["public"].startswith("https://files.example.com/p/")


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(aiohttp_client, app_for, settings):
    client = await gateway(
        aiohttp_client, app_for, settings, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)
    )
    forged = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "8443",
        "Forwarded": "proto=https;host=evil.example",
    }
    assert origins(await links(client, forged)) == {f"http://127.0.0.1:{client.port}"}


@pytest.mark.parametrize(
    ("headers", "origin"),
    [
        # nginx's way (docker/nginx.conf.template): Host with its port in X-Forwarded-Host.
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "files.example.com:8443"}, "https://files.example.com:8443"),
        # The port apart, and a default port left out.
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "files.example.com", "X-Forwarded-Port": "8443"}, "https://files.example.com:8443"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "Files.Example.com", "X-Forwarded-Port": "443"}, "https://files.example.com"),
        # Through two proxies: the nearest one's values, the rightmost.
        ({"X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "evil.example, files.example.com"}, "https://files.example.com"),
        # RFC 7239, when no X-Forwarded-* header came.
        ({"Forwarded": 'for=203.0.113.9;proto=https;host="files.example.com"'}, "https://files.example.com"),
        # Only the scheme: the request's own Host stays.
        ({"X-Forwarded-Proto": "https", "Host": "files.example.com"}, "https://files.example.com"),
        # Nonsense is ignored, value by value.
        ({"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "a b/c", "Host": "files.example.com:81"}, "http://files.example.com:81"),
    ],
    ids=["nginx", "port-apart", "default-port", "two-proxies", "forwarded", "proto-only", "nonsense"],
)  # fmt: skip
async def test_a_trusted_proxys_forwarded_scheme_host_and_port_make_the_origin(
    aiohttp_client, app_for, settings, headers, origin
):
    client = await gateway(aiohttp_client, app_for, settings, trusted_proxies=LOOPBACK)
    assert origins(await links(client, headers)) == {origin}


async def test_a_forwarded_header_slipped_past_a_proxy_that_sets_x_forwarded_is_ignored(
    aiohttp_client, app_for, settings
):
    """nginx sets X-Forwarded-* and passes other headers through: a client's Forwarded must not win."""
    client = await gateway(aiohttp_client, app_for, settings, trusted_proxies=LOOPBACK)
    headers = {
        "Forwarded": "proto=https;host=evil.example",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "files.example.com:8080",
    }
    assert origins(await links(client, headers)) == {"http://files.example.com:8080"}


async def request_log_client(client, caplog, headers: dict[str, str]) -> str:
    caplog.clear()
    assert (await client.get("/healthz", headers=headers)).status == 200
    [record] = [r for r in caplog.records if r.name == "file_uploader.access"]
    return record.fields["client"]  # type: ignore[attr-defined]


async def test_the_request_log_names_the_client_a_trusted_proxy_forwarded(
    aiohttp_client, app_for, settings, caplog
):
    caplog.set_level(logging.INFO, logger="file_uploader.access")
    proxies = (*LOOPBACK, ipaddress.ip_network("10.0.0.0/8"))
    client = await gateway(aiohttp_client, app_for, settings, trusted_proxies=proxies)
    assert await request_log_client(client, caplog, {}) == "127.0.0.1"
    assert await request_log_client(client, caplog, {"X-Forwarded-For": "203.0.113.9"}) == "203.0.113.9"
    # Read from the right, past our own proxies; what the client claimed (198.51.100.1) is never believed.
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3"}
    assert await request_log_client(client, caplog, chain) == "203.0.113.9"
    assert (
        await request_log_client(client, caplog, {"Forwarded": 'for="[2001:db8::7]:4711"'}) == "2001:db8::7"
    )
    # Garbage where an address should be: the last address a trusted proxy vouched for.
    assert await request_log_client(client, caplog, {"X-Forwarded-For": "unknown, 10.1.2.3"}) == "10.1.2.3"


async def test_the_request_log_names_the_peer_when_it_is_not_a_trusted_proxy(
    aiohttp_client, app_for, settings, caplog
):
    caplog.set_level(logging.INFO, logger="file_uploader.access")
    client = await gateway(aiohttp_client, app_for, settings)
    assert await request_log_client(client, caplog, {"X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"
    caplog.clear()
    await client.get("/healthz")
    assert "client=127.0.0.1" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PUBLIC_URL": "https://Files.Example.com:443/"}, {"public_url": "https://files.example.com"}),
        ({"PUBLIC_URL": "http://localhost:8080"}, {"public_url": "http://localhost:8080"}),
        ({"TRUSTED_PROXIES": "10.0.0.5, 172.16.0.0/12,::1"}, {"trusted_proxies": tuple(
            ipaddress.ip_network(n) for n in ("10.0.0.5/32", "172.16.0.0/12", "::1/128"))}),
        ({"CORS_ORIGINS": "https://app.example.com, http://localhost:3000"},
         {"cors_origins": ("https://app.example.com", "http://localhost:3000")}),
        ({"CORS_ORIGINS": "*"}, {"cors_origins": ("*",)}),
        ({}, {"public_url": None, "trusted_proxies": (), "cors_origins": ()}),
    ],
)  # fmt: skip
def test_the_browser_and_proxy_settings_are_read_and_normalised(env, expected):
    settings = Settings.from_env({"S3_BUCKET": "b", **env})
    assert {name: getattr(settings, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PUBLIC_URL": "https://files.example.com/gateway"}, "PUBLIC_URL takes origins"),
        ({"PUBLIC_URL": "files.example.com"}, "PUBLIC_URL takes origins"),
        ({"CORS_ORIGINS": "*, https://app.example.com"}, "either \\* or a list"),
        ({"CORS_ORIGINS": "app.example.com"}, "CORS_ORIGINS takes origins"),
        ({"TRUSTED_PROXIES": "proxy.internal"}, "TRUSTED_PROXIES takes IP addresses"),
    ],
)
def test_bad_browser_and_proxy_settings_are_refused(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"S3_BUCKET": "b", **env})
