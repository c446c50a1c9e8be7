"""moto's S3, served alone: `python -m devtools.moto_s3 -p PORT [-H HOST]`, what the tests start.

`python -m moto.server` serves every AWS service moto has, and finds the one a
request is for on each request: it lists moto's package directory and stats
each of its ~170 entries, then tries the URL patterns of every service. On an
S3 call that was 40 % of moto's CPU (4.5 ms a call against 2.8 ms here), and
moto answers each of the ~10,000 S3 calls a `make test-fast` makes. Here every
request goes straight to moto's own S3 application, the one moto.server would
have picked, under the same werkzeug server and moto's request handler (which
keeps connections here, below); /moto-api/ (`reset`, between tests) still goes
through moto's dispatcher.

Three things are added. First, moto checks a conditional write's If-Match or
If-None-Match and then stores the object, with nothing between the two to stop
another thread's write of the same key, where S3 makes them one atomic step;
the compare-and-swap (file_uploader/storage/cas.py) and its race tests rely on
that. Conditional writes are answered here one at a time, so they are atomic
against each other, as on S3. (moto.server's slower dispatch only made the
race rarer: a link's download limit was overshot once in a test-fast run here.)

Second, connections are kept: werkzeug's server (moto.server's) answers
every request with `Connection: close`, so each of the suite's ~10,000 S3
calls opened a TCP connection and a thread of its own. `KeepAliveHandler`
answers request after request on one connection, each connection in its own
thread as before, and aiobotocore's pool reuses them: a seventh less CPU a
call, on both sides. (gunicorn's gthread worker keeps connections too, but
adds a process and hands every request from its poller thread to a pool and
back, for no less CPU here.)

Third, a key's ETag is hashed under the key's lock. moto computes it on
first use by seeking its buffer to the start and reading it, without the lock
its `value` takes; a part of 5 MiB is a file on disk, whose reads let another
thread run, so an UploadPart's answer and a ListParts of the same upload at
that moment hashed what the other left in the buffer: 2 of 48 parts got the
ETag of other bytes, kept, and the gateway (rightly) refused the part. S3
has no such race.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import IO, Any, cast

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.models import FakeKey
from werkzeug.serving import DechunkedInput, run_simple
from werkzeug.wsgi import LimitedStream

# The WSGI names of the headers that make a write conditional.
CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
# Seconds an idle connection is kept: longer than aiobotocore's own 12 s (aiohttp's
# keepalive_timeout), so the client always drops an idle connection first and never sends a
# request on one the server is closing at that moment (a reset no test asked for).
KEEPALIVE_SECONDS = 60
# What is read at a time of a request body the application left unread.
DRAIN_CHUNK = 64 * 1024


class S3Only:
    """A WSGI application: moto's S3 for every path but /moto-api/, conditional writes atomic."""

    def __init__(self) -> None:
        self.dispatcher = DomainDispatcherApplication(create_backend_app)
        self.s3 = create_backend_app("s3")
        self.conditional_writes = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.dispatcher(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") and any(
            name in environ for name in CONDITIONS
        ):
            # The handler runs inside this call (the response's body is only sent after it).
            with self.conditional_writes:
                return self.s3(environ, start_response)
        return self.s3(environ, start_response)


def hash_etags_under_the_keys_lock() -> None:
    """FakeKey.etag, taking the lock FakeKey.value takes (a plain Lock: neither calls the other)."""
    unlocked = vars(FakeKey)["etag"].fget

    def etag(key: FakeKey) -> str:
        with key.lock:
            return unlocked(key)

    FakeKey.etag = property(etag)  # type: ignore[assignment,method-assign]


class KeepAliveHandler(MotoRequestHandler):
    """moto's request handler (werkzeug's, keeping header names with underscores), answering
    request after request on one connection (HTTP/1.1 keep-alive) until the client closes it.

    werkzeug's own `run_wsgi` cannot keep a connection: it always sends `Connection: close`,
    and after each response it reads whatever else the socket holds, which on a kept connection
    is the client's next request. This one reads exactly the request's body (its Content-Length,
    or its chunks), drains what the application left of it, and sends the response, whole,
    with its length. moto builds every response in memory anyway."""

    protocol_version = "HTTP/1.1"
    timeout = KEEPALIVE_SECONDS  # an idle connection (and its thread) ends after this
    # Headers and body go out in two writes: without TCP_NODELAY the body of a small response
    # would wait for the client's delayed ACK of the headers (40 ms on Linux).
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Not a line per request: werkzeug's took 8 % of moto's CPU, into a log nobody reads
        unless a request fails, and failures are still logged (log_error)."""

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body = environ["wsgi.input"]
        if not isinstance(body, DechunkedInput):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"] = LimitedStream(cast(IO[bytes], self.rfile), length)
        answer: list[Any] = []
        payload: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return payload.append

        try:
            result = self.server.app(environ, start_response)
            try:
                payload.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            while body.read(DRAIN_CHUNK):  # what the application left of the body
                pass
        except Exception:
            self.log_error("Error on request %s:\n%s", self.requestline, traceback.format_exc())
            # What is left of the request is not known: this connection ends here.
            answer[:] = [
                "500 INTERNAL SERVER ERROR",
                [("Content-Type", "text/plain"), ("Connection", "close")],
            ]
            payload[:] = [b"Internal Server Error"]
        status, headers = answer
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        names = set()
        for name, value in headers:
            self.send_header(name, value)  # a Connection: close also ends the connection here
            names.add(name.lower())
        data = b"".join(payload)
        bodiless = environ["REQUEST_METHOD"] == "HEAD" or code[0] == "1" or code in ("204", "304")
        if "content-length" not in names and not bodiless:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server sets it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as moto.server: exit cleanly when stopped
    hash_etags_under_the_keys_lock()
    run_simple(args.host, args.port, S3Only(), threaded=True, request_handler=KeepAliveHandler)


if __name__ == "__main__":
    main()
