"""`python -m file_uploader`: load `.env`, then serve the gateway."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .app import create_app
from .settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m file_uploader", description=__doc__)
    parser.add_argument("--host", help="address to listen on (default: HOST, else 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default: PORT, else 8080)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"file_uploader: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        print=lambda text: logging.getLogger("file_uploader").info("%s", text.strip()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
