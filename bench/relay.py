"""The download floor for the benchmark: a bare aiohttp relay of an S3 object.

`GET /<bucket>/<key>` is answered with the body of the same GET to the S3
server, written on as each piece arrives, with nothing else done: no
signature (bench/fast_s3.py checks none), no authentication, no ranges, no
timeouts. Its CPU time per GiB is what relaying the bytes itself costs, which
the gateway's download line is measured against.

    python bench/relay.py --port 9001 --s3 http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

S3_URL: web.AppKey[str] = web.AppKey("s3_url", str)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


async def relay(request: web.Request) -> web.StreamResponse:
    url = f"{request.app[S3_URL]}/{request.match_info['path']}"
    async with request.app[SESSION].get(url) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def make_app(s3_url: str) -> web.Application:
    app = web.Application()
    app[S3_URL] = s3_url

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(None)) as opened:
            app[SESSION] = opened
            yield

    app.cleanup_ctx.append(session)
    app.router.add_get("/{path:.+}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--s3", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(make_app(args.s3), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
