"""`python -m file_uploader probe`: what the S3 server enforces, and the integrity mode the
gateway would apply (the work is storage/probe.py's; this prints it as JSON).

The gateway runs the same probe at startup; this runs it on demand, say after
an S3 upgrade, or to choose S3_CHECKSUM before deploying.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..settings import Settings
from ..storage import open_storage
from ..storage.errors import StorageFailure


async def _probe(settings: Settings) -> dict[str, Any]:
    async with open_storage(settings) as storage:
        await storage.readiness.ensure_bucket()
        decision = await storage.readiness.probe(every_checksum=True)
        return {**storage.readiness.report(), "note": decision.note}


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        found = asyncio.run(_probe(settings))
    except StorageFailure as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2))
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "probe", help="find out which checksums and conditional writes S3 enforces (prints JSON)"
    )
    parser.set_defaults(run=run)
