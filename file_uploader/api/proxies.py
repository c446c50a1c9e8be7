"""Who asked, and at which address: a request's client and its public origin, behind proxies.

Behind a reverse proxy the gateway's peer is the proxy, and the request's own
scheme and Host are what the proxy asked for (`http://gateway:8080`), not
what the user typed. The proxy says what it saw in headers: `X-Forwarded-For`,
`-Proto`, `-Host`, `-Port`, or RFC 7239's `Forwarded`. Any client can send
those headers too, so they are believed only when the peer is one of
`TRUSTED_PROXIES` (none by default):

- `client_address`: the peer; from a trusted peer, the forwarded addresses
  read from the right (nearest hop first), skipping trusted proxies: the
  first address that is not one of ours is the client. Whatever lies left of
  it is what that client claimed, and is never believed.
- `public_origin`: `PUBLIC_URL` when set; else, from a trusted peer, the
  scheme and host its proxy forwarded (the nearest proxy's, the rightmost
  value); else the request's own scheme and Host. Share links, public links
  and tus `Location`s start with it: a tus client sends its token to that
  `Location` next, so it must never be a host a client made up.

One family of headers is read: `X-Forwarded-*` when the peer sent any of
them, else `Forwarded`. nginx sets the X-Forwarded ones and passes unknown
headers through, so a `Forwarded` header a client slipped past it is ignored.
A forwarded scheme other than http/https, or a host that is not a host, is
ignored too (the request's own is used).

Why not aiohttp-remotes: its strict mode wants exactly one forwarded address
per trusted hop and answers 400 otherwise (a client that sends its own
`X-Forwarded-For` through nginx, which appends to it, would be refused), it
takes the leftmost, client-supplied scheme and host, it ignores
`X-Forwarded-Port`, and it hands handlers a clone of the request, whose
request-scoped keys (the user id, the request id) the outer middleware and
the response signals would no longer see.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from ..appkeys import SETTINGS
from ..settings import IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

X_FORWARDED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port")
SCHEMES = ("http", "https")
# host[:port], as a Host header holds it: a name or IPv4 address, or an IPv6 one in brackets.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _address(node: str) -> IpAddress | None:
    """An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`."""
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:].split("]", 1)[0]
    elif node.count(":") == 1:
        node = node.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(node)
    except ValueError:
        return None  # "unknown", "_hidden" (RFC 7239's obfuscated names), or garbage
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _trusted(address: IpAddress | None, networks: tuple[IpNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def _values(request: web.Request, name: str) -> list[str]:
    """Every comma-separated value of every `name` header, in order."""
    return [item.strip() for header in request.headers.getall(name, []) for item in header.split(",")]


def _uses_x_forwarded(request: web.Request) -> bool:
    return any(name in request.headers for name in X_FORWARDED)


def _peer(request: web.Request) -> tuple[str, bool]:
    """The peer's address as text, and whether it is a trusted proxy."""
    peer = request.remote or ""
    return peer, _trusted(_address(peer), request.app[SETTINGS].trusted_proxies)


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or from a trusted proxy the one it forwarded."""
    peer, trusted = _peer(request)
    if not trusted:
        return peer
    if _uses_x_forwarded(request):
        hops = _values(request, "X-Forwarded-For")
    else:
        hops = [element.get("for", "") for element in request.forwarded]
    networks = request.app[SETTINGS].trusted_proxies
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # the last address a trusted proxy vouched for stands
        client = str(address)
        if not _trusted(address, networks):
            break
    return client


def _last(request: web.Request, name: str) -> str | None:
    values = _values(request, name)
    return values[-1] if values else None


def public_origin(request: web.Request) -> str:
    """`scheme://host[:port]` that links to this gateway start with, for this request."""
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url
    scheme, host, port = request.scheme, request.host, None
    if _peer(request)[1]:
        if _uses_x_forwarded(request):
            proto, forwarded_host, port = (_last(request, name) for name in X_FORWARDED[1:])
        else:
            nearest = request.forwarded[-1] if request.forwarded else {}
            proto, forwarded_host = nearest.get("proto"), nearest.get("host")
        if proto and proto.lower() in SCHEMES:
            scheme = proto.lower()
        if forwarded_host and _HOST.fullmatch(forwarded_host.lower()):
            host = forwarded_host.lower()
    match = _HOST.fullmatch(host.lower())
    if match is None:  # a Host header no URL could hold: say where the socket is
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        address, socket_port = sockname[:2] if sockname else ("localhost", _DEFAULT_PORTS[scheme])
        return f"{scheme}://{f'[{address}]' if ':' in address else address}:{socket_port}"
    name, with_port = match.group(1), match.group(2)
    if not with_port and port and port.isdigit():
        with_port = f":{port}"
    if with_port == f":{_DEFAULT_PORTS[scheme]}":
        with_port = ""
    return f"{scheme}://{name}{with_port or ''}"


def absolute_url(request: web.Request, path: str) -> str:
    """The absolute URL of `path` (already %-encoded, from the router) on the public origin."""
    return public_origin(request) + path
