"""`python -m file_uploader [serve]`: load `.env`, then run the gateway or an admin command
(gc, purge, probe)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .admin import gc, probe, purge
from .app import create_app
from .ops import logs
from .ops.loop import new_event_loop
from .server import lifecycle
from .settings import Settings, SettingsError, load_settings, parse_port


def serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(lifecycle.serve(create_app, settings, host, port))
    return 0


def port_option(text: str) -> int:
    try:
        return parse_port("--port", text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m file_uploader", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(run=serve, host=None, port=None)
    run = commands.add_parser("serve", help="run the gateway (the default)")
    run.add_argument("--host", help="address to listen on (default: HOST, else 0.0.0.0)")
    run.add_argument("--port", type=port_option, help="port to listen on (default: PORT, else 8080)")
    run.set_defaults(run=serve)
    # Admin commands add their own sub-parsers here, each with set_defaults(run=...).
    purge.add_parser(commands)
    gc.add_parser(commands)
    probe.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level, settings.log_format)
        return args.run(settings, args)
    except SettingsError as exc:
        # One line naming the setting: what the user has to change, without a traceback.
        print(f"file_uploader: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
