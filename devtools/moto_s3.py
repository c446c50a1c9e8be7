"""moto's S3, served alone: `python -m devtools.moto_s3 -p PORT [-H HOST]`, what the tests start.

`python -m moto.server` serves every AWS service moto has, and finds the one a
request is for on each request: it lists moto's package directory and stats
each of its ~170 entries, then tries the URL patterns of every service. On an
S3 call that was 40 % of moto's CPU (4.5 ms a call against 2.8 ms here), and
moto answers each of the ~10,000 S3 calls a `make test-fast` makes. Here every
request goes straight to moto's own S3 application, the one moto.server would
have picked, under the same werkzeug server and request handler; /moto-api/
(`reset`, between tests) still goes through moto's dispatcher.

One thing is added: moto checks a conditional write's If-Match or
If-None-Match and then stores the object, with nothing between the two to stop
another thread's write of the same key, where S3 makes them one atomic step;
the compare-and-swap (file_uploader/storage/cas.py) and its race tests rely on
that. Conditional writes are answered here one at a time, so they are atomic
against each other, as on S3. (moto.server's slower dispatch only made the
race rarer: a link's download limit was overshot once in a test-fast run here.)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

# The WSGI names of the headers that make a write conditional.
CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server sets it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as moto.server: exit cleanly when stopped
    run_simple(args.host, args.port, S3Only(), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
