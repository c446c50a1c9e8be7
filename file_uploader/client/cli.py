"""`file-uploader` (or `python -m file_uploader.client`): the gateway's API from a shell.

Token and URL come from --token / --url or FILE_UPLOADER_TOKEN / FILE_UPLOADER_URL; where the
gateway takes bearer tokens (a JWT, or your application's session token), --bearer or
FILE_UPLOADER_BEARER instead of a token.
Progress bars and tables go to stderr and stdout through rich; every failure is
one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from yarl import URL

from ..sizes import parse_size

DEFAULT_URL = "http://localhost:8080"
CHUNK = 256 * 1024
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

out = Console()
err = Console(stderr=True)


Run = Callable[["Client", argparse.Namespace], Awaitable[int]]  # what a subcommand does


class CliError(Exception):
    """A failure to report in one line."""


def _say(text: str, style: str | None = None) -> None:
    """A line on stderr, as written: a name such as "[bold]" is not read as rich markup."""
    err.print(text, style=style, markup=False, highlight=False)


def parse_duration(text: str) -> int:
    """Seconds in `90`, `90s`, `10m`, `1h`, `2d` or `1w`."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 10m, 1h, 7d)")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


class SpeedColumn(ProgressColumn):
    """The recent rate while bytes move; once the transfer is over, its bytes over its whole time.

    rich's own column keeps the rate of the moment the last byte was read: for an
    upload that is before the gateway has stored the file (its last parts and the
    multipart completion still to come), so it showed up to twice the real rate.
    A transfer is over when `Progress.stop_task` is called, after the answer.
    """

    def render(self, task: Task) -> Text:
        if task.stop_time is not None and task.elapsed:
            speed: float | None = task.completed / task.elapsed
        else:
            speed = task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{decimal(int(speed))}/s", style="progress.data.speed")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        SpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


class Client:
    def __init__(
        self, session: aiohttp.ClientSession, url: str, token: str | None, bearer: str | None = None
    ) -> None:
        self.session = session
        self.base = URL(url.rstrip("/"))
        self.token = token
        self.bearer = bearer

    def headers(self) -> dict[str, str]:
        if self.bearer:
            if self.token:
                raise CliError("a token and a bearer token: pass one (--token or --bearer)")
            return {"Authorization": f"Bearer {self.bearer}"}
        if not self.token:
            raise CliError(
                "no token: pass --token or set FILE_UPLOADER_TOKEN (`token` makes one), "
                "or --bearer / FILE_UPLOADER_BEARER where the gateway takes bearer tokens"
            )
        return {"X-Auth-Token": self.token}

    def api_url(self, path: str) -> URL:
        """`path` (/api/...) on the gateway."""
        return URL(f"{self.base}{path}")

    def file_url(self, name: str, suffix: str = "") -> URL:
        quoted = urllib.parse.quote(name, safe="/") + suffix
        return URL(f"{self.base}/api/files/{quoted}", encoded=True)

    async def request(
        self, method: str, url: URL, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        try:
            response = await self.session.request(
                method, url, headers={**self.headers(), **(headers or {})}, **kwargs
            )
        except aiohttp.ClientConnectionError as exc:
            raise CliError(f"cannot reach {self.base}: {exc}") from None
        if response.status >= 400:
            raise CliError(await _error_text(response))
        return response


async def _error_text(response: aiohttp.ClientResponse) -> str:
    try:
        error = (await response.json(content_type=None))["error"]
        return f"{error['message']} ({response.status} {error['code']})"
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        return f"the gateway answered {response.status} {response.reason}"


async def _read_file(path: Path, advance: Callable[[int], object]) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            advance(len(chunk))
            yield chunk


async def put(client: Client, args: argparse.Namespace) -> int:
    files = [Path(name) for name in args.files]
    if args.as_name and len(files) > 1:
        raise CliError("--as names one file; give a single FILE with it")
    for path in files:
        if not path.is_file():
            raise CliError(f"{path}: not a readable file")
    with _progress() as progress:
        for path in files:
            name = args.as_name or path.name
            size = path.stat().st_size
            task = progress.add_task(escape(name), total=size)
            body = _read_file(path, functools.partial(progress.advance, task))
            headers = {"Content-Length": str(size)}
            if args.expires:
                headers["X-Expires-In"] = str(args.expires)
            response = await client.request("PUT", client.file_url(name), data=body, headers=headers)
            response.release()
            progress.stop_task(task)  # stored: the speed now counts the whole time
    return 0


def _modified(item: dict[str, Any]) -> str:
    return str(item["modified"]).replace("T", " ").replace("Z", "")[:19]


async def _folder(client: Client, folder: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Every sub-folder and file directly in `folder`, following the listing's pages."""
    folders: list[str] = []
    files: list[dict[str, Any]] = []
    query = {"prefix": folder, "delimiter": "/"}
    while True:
        response = await client.request("GET", client.api_url("/api/files").with_query(query))
        page = await response.json()
        folders += page["folders"]
        files += page["files"]
        if page["next"] is None:
            return folders, files
        query["after"] = page["next"]


async def ls(client: Client, args: argparse.Namespace) -> int:
    table = Table("name", "size", "modified", box=None, header_style="bold")
    table.columns[1].justify = "right"
    if args.folder is None:
        response = await client.request("GET", client.api_url("/api/files").with_query(details="1"))
        items = await response.json()
    else:
        folder = args.folder.strip("/") + "/" if args.folder.strip("/") else ""
        folders, items = await _folder(client, folder)
        for name in folders:
            table.add_row(Text(name), "-", "")
    for item in items:
        # Text() keeps a name such as "[bold]" from being read as rich markup.
        table.add_row(Text(item["name"]), decimal(item["size"]), _modified(item))
    out.print(table)
    return 0


def _target(name: str, output: str | None) -> Path:
    """Where `get` writes: -o PATH, a file named like NAME inside -o DIR, or ./NAME."""
    base = name.rsplit("/", 1)[-1]
    target = Path(output or base)
    return target / base if target.is_dir() else target


async def get(client: Client, args: argparse.Namespace) -> int:
    url = client.file_url(args.name)
    if args.name.endswith("/"):  # a folder: as one zip, FOLDER.zip
        url = url.with_query(format="zip")
        args.name = args.name.rstrip("/") + ".zip"
    response = await client.request("GET", url)
    if args.output == "-":
        async for chunk in response.content.iter_chunked(CHUNK):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return 0
    target = _target(args.name, args.output)
    partial = target.with_name(target.name + ".part")
    with _progress() as progress, partial.open("wb") as file:
        task = progress.add_task(escape(target.name), total=response.content_length)
        async for chunk in response.content.iter_chunked(CHUNK):
            await asyncio.to_thread(file.write, chunk)
            progress.advance(task, len(chunk))
        progress.stop_task(task)
    partial.replace(target)  # a cut download never leaves a file that looks whole
    return 0


async def _remove_folder(client: Client, name: str) -> str:
    """Delete the folder `name` and everything in it; what was done, in words. A name that is
    no folder but a file is deleted as a file, as `rm -r` does."""
    folder = name.rstrip("/") + "/"
    url = client.file_url(folder).with_query(recursive="1")
    try:
        response = await client.request("DELETE", url)
    except CliError as exc:
        if "(404 " not in str(exc) or name.endswith("/"):
            raise
        (await client.request("DELETE", client.file_url(name))).release()
        return f"deleted {name}"
    done = await response.json()
    return f"deleted {folder} ({done['deleted']} files, {done['aborted']} unfinished uploads)"


async def rm(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for name in args.names:
        try:
            if args.recursive:
                _say(await _remove_folder(client, name))
                continue
            (await client.request("DELETE", client.file_url(name))).release()
            _say(f"deleted {name}")
        except CliError as exc:
            _say(f"{name}: {exc}", style="red")
            failed += 1
    return 1 if failed else 0


async def share(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, object] = {}
    if args.expires:
        body["expires_in"] = args.expires
    if args.password:
        body["password"] = args.password
    if args.max_downloads:
        body["max_downloads"] = args.max_downloads
    response = await client.request("POST", client.file_url(args.name, "/share"), json=body or None)
    link = await response.json()
    print(link["url"])
    limits = [f"expires {link['expires_at']}"] if link.get("expires_at") else []
    if link.get("max_downloads"):
        limits.append(f"{link['max_downloads']} downloads")
    if link.get("password"):
        limits.append("password protected")
    _say(f"link {link.get('id', '')}: {', '.join(limits) or 'no limits'}")
    return 0


async def expire(client: Client, args: argparse.Namespace) -> int:
    """Make a file expire after TIME, or keep it (`never`)."""
    try:
        seconds = None if args.time == "never" else parse_duration(args.time)
    except argparse.ArgumentTypeError as exc:
        raise CliError(str(exc)) from None
    response = await client.request("PATCH", client.file_url(args.name), json={"expires_in": seconds})
    answer = await response.json()
    _say(f"{args.name}: expires {answer['expires_at'] or 'never'}")
    return 0


async def request(client: Client, args: argparse.Namespace) -> int:
    """Print an upload request's URL: anyone with it adds files to FOLDER."""
    body: dict[str, object] = {"folder": args.folder}
    for field in ("max_files", "max_bytes", "expires", "password"):
        value = getattr(args, field)
        if value:
            body["expires_in" if field == "expires" else field] = value
    response = await client.request("POST", client.api_url("/api/requests"), json=body)
    made = await response.json()
    print(made["url"])
    _say(f"request {made['id']} into {made['folder']}")
    return 0


async def _listing(client: Client, path: str, args: argparse.Namespace) -> Any:
    """GET `path`'s JSON; None once printed as it is, when --json asks for the gateway's answer."""
    found = await (await client.request("GET", client.api_url(path))).json()
    if args.json:
        print(json.dumps(found))
        return None
    return found


async def _delete_each(client: Client, path: str, ids: list[str], done: str) -> int:
    """DELETE `path`/<id> for each id (links, upload requests), saying `done` <id> for each."""
    for item_id in ids:
        (await client.request("DELETE", client.api_url(f"{path}/{item_id}"))).release()
        _say(f"{done} {item_id}")
    return 0


async def requests(client: Client, args: argparse.Namespace) -> int:
    found = await _listing(client, "/api/requests", args)
    for item in found or []:
        files = f"{item['files']}/{item['max_files'] or '-'}"
        print("\t".join([item["id"], files, item["expires_at"] or "never", item["folder"], item["url"]]))
    return 0


async def end_request(client: Client, args: argparse.Namespace) -> int:
    return await _delete_each(client, "/api/requests", args.ids, "ended")


async def links(client: Client, args: argparse.Namespace) -> int:
    """The user's share links: id, downloads (of the limit), expiry, name, URL."""
    found = await _listing(client, "/api/links", args)
    for link in found or []:
        used = f"{link['downloads']}/{link['max_downloads'] or '-'}"
        state = "expired" if link.get("expired") else ("used up" if link.get("used_up") else "")
        print(
            "\t".join([link["id"], used, link["expires_at"] or "never", state, link["name"], link["url"]]),
        )
    return 0


async def revoke(client: Client, args: argparse.Namespace) -> int:
    return await _delete_each(client, "/api/links", args.ids, "revoked")


_BINARY_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def binary(size: int) -> str:
    """`size` in the units USER_QUOTA is usually set in: 512 bytes, 1.5 MiB, 10.0 GiB."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} bytes" if unit == 0 else f"{value:.1f} {_BINARY_UNITS[unit]}"


async def usage(client: Client, args: argparse.Namespace) -> int:
    found = await _listing(client, "/api/usage", args)
    if found is None:
        return 0
    used, quota = found["used"], found["quota"]
    line = f"{binary(used)} used"
    line += f" of {binary(quota)} ({100 * used / quota:.0f}%)" if quota else " (no quota)"
    line += f", {found['files']} files"
    if found.get("reserved"):
        line += f"; {binary(found['reserved'])} of it held by uploads in progress"
    print(line)
    return 0


# New ids never begin with '-'; ones made before that do, and argparse reads them as options.
_DASHED_IDS = "an ID that begins with '-' goes after --, as in: %(prog)s -- -AbC..."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="file-uploader", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("FILE_UPLOADER_URL", DEFAULT_URL), help="gateway URL")
    parser.add_argument(
        "--token", default=os.environ.get("FILE_UPLOADER_TOKEN"), help="your UUID (X-Auth-Token)"
    )
    parser.add_argument(
        "--bearer",
        default=os.environ.get("FILE_UPLOADER_BEARER"),
        help="a bearer token instead (Authorization: Bearer): a JWT, or your application's session token",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Run | None, help: str, *, json_answer: bool = False
    ) -> argparse.ArgumentParser:
        """A subcommand that runs `run`; `json_answer`: it takes --json, to print the gateway's answer."""
        sub = commands.add_parser(name, help=help)
        if run is not None:
            sub.set_defaults(run=run)
        if json_answer:
            sub.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
        return sub

    command("token", None, "print a new random token (a new, empty space)")
    sub = command("put", put, "upload files")
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub.add_argument("--as", dest="as_name", metavar="NAME", help="store the one FILE under NAME")
    sub.add_argument("--expires", type=parse_duration, metavar="TIME", help="the files are gone after TIME")
    sub = command("ls", ls, "list your files (all of them, or one folder's)")
    sub.add_argument(
        "folder", nargs="?", metavar="FOLDER", help="list only this folder: its files and sub-folders"
    )
    sub = command("get", get, "download a file (a FOLDER/ as FOLDER.zip)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("-o", "--output", metavar="PATH", help="where to write it (- for stdout)")
    sub = command("rm", rm, "delete files (-r: folders and everything in them)")
    sub.add_argument("names", nargs="+", metavar="NAME")
    sub.add_argument("-r", "--recursive", action="store_true", help="delete folders and what is in them")
    sub = command("share", share, "print a link that needs no token")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument(
        "--expires", type=parse_duration, metavar="TIME", help="lifetime: 90s, 10m, 1h (default), 7d"
    )
    sub.add_argument("--password", help="the password the link asks for (curl -u :PASSWORD)")
    sub.add_argument("--max-downloads", type=int, metavar="N", help="the link serves N downloads")
    command("links", links, "list your share links and how often each was used", json_answer=True)
    sub = command("revoke", revoke, "revoke share links (by id, from `links`)")
    sub.add_argument("ids", nargs="+", metavar="ID", help=_DASHED_IDS)
    sub = command("expire", expire, "make a file expire after TIME (never: keep it)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("time", metavar="TIME", help="90s, 10m, 1h, 7d, or never")
    sub = command("request", request, "print an upload request: a link to send you files")
    sub.add_argument("folder", metavar="FOLDER", help="where what is sent lands")
    sub.add_argument("--max-files", type=int, metavar="N")
    sub.add_argument("--max-bytes", type=parse_size, metavar="SIZE", help="all files together: 100MiB, 2GiB")
    sub.add_argument("--expires", type=parse_duration, metavar="TIME")
    sub.add_argument("--password", help="the password the link asks for")
    command("requests", requests, "list your upload requests", json_answer=True)
    sub = command("end-request", end_request, "end upload requests (by id, from `requests`)")
    sub.add_argument("ids", nargs="+", metavar="ID", help=_DASHED_IDS)
    command("usage", usage, "what you store, against your quota", json_answer=True)
    return parser


async def _run(args: argparse.Namespace) -> int:
    # No total timeout: a large upload or download takes as long as it takes.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return await args.run(Client(session, args.url, args.token, args.bearer), args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        print(uuid.uuid4())
        return 0
    try:
        return asyncio.run(_run(args))
    except CliError as exc:
        _say(f"file-uploader: {exc}", style="red")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
