"""How a token and a file name become an S3 key.

Layout, where the user id is the SHA-256 (hex) of
the token's canonical lower-case form:

    files/<user id>/<name>             the files
    uploads/<user id>/<upload id>.*    the state of resumable (tus) uploads
    pub/<user id>/<name>               "this file is public": its library id (library.py)
    library/<library id>               the public library, newest first (library.py)
    thumbs/<user id>/<name>//<size>.<format>   cached thumbnails (thumbnails.py)
    thumbs/<user id>//<SHA-256 of name>/<size>.<format>   those of names too long for the above
    quota/<user id>/ledger             what the user stores and holds, with USER_QUOTA (quotas.py)
    ttl/<user id>/<name>               "this file expires at...": its time and version (expiry.py)
    links/<link id>                    a share link's record (links.py)
    requests/<request id>              an upload request's record (requests.py)
    requested/<user id>/<request id>   the user's upload requests, to list them (requests.py)
    events/q/<time>-<event id>         an event not delivered yet, with WEBHOOK_URL (events.py)
    events/lock                        who delivers the events other processes left (events.py)
    linked/<user id>/<link id>         the user's links, to list them (links.py)

The hash is one-way, so no token can be
read back from a bucket listing, a backup or a log line, and the same UUID in
any letter case is the same user. Everything here is pure, so property tests
can run it without a server.
"""

from __future__ import annotations

import hashlib
import re

from ..sizes import MAX_KEY_BYTES
from .errors import InvalidName

FILES_ROOT = "files/"
UPLOADS_ROOT = "uploads/"  # resumable (tus) upload state: see tus/
# Shorter than files/, so that a marker fits S3's key limit for every name a file may have.
PUBLIC_ROOT = "pub/"  # one marker per public file: see library.py
LIBRARY_ROOT = "library/"  # the public library's entries (not per user): see library.py
THUMBNAILS_ROOT = "thumbs/"  # cached thumbnails: see thumbnails.py
QUOTA_ROOT = "quota/"  # one ledger per user, with USER_QUOTA: see quotas.py
REMOVED_ROOT = "removed/"  # who removed a file's version first: see landing.py
# Shorter than files/ too: an expiry marker fits S3's key limit for every name a file may have.
DIRECT_ROOT = "direct/"  # direct-to-S3 uploads in progress, one record each: see direct.py
EXPIRY_ROOT = "ttl/"  # one marker per expiring file: see expiry.py
LINKS_ROOT = "links/"  # share links' records, by link id (not per user): see links.py
LINK_INDEX_ROOT = "linked/"  # one empty entry per link of a user: see links.py
REQUESTS_ROOT = "requests/"  # upload requests' records, by id (not per user): see requests.py
REQUEST_INDEX_ROOT = "requested/"  # one empty entry per upload request of a user: see requests.py
EVENTS_ROOT = "events/"  # events not delivered yet (WEBHOOK_URL), and who delivers them: see events.py
PROBE_ROOT = "probe/"  # the startup write probe's objects, deleted as soon as written: see probe.py
# The per-user roots: every one of them holds `<root><user id>/...`.
USER_ROOTS = (
    FILES_ROOT,
    UPLOADS_ROOT,
    PUBLIC_ROOT,
    THUMBNAILS_ROOT,
    QUOTA_ROOT,
    REMOVED_ROOT,
    LINK_INDEX_ROOT,
    EXPIRY_ROOT,
    REQUEST_INDEX_ROOT,
    DIRECT_ROOT,
)
# Every prefix the gateway writes under; anything else in the bucket is not ours.
ROOTS = (*USER_ROOTS, LIBRARY_ROOT, LINKS_ROOT, REQUESTS_ROOT, EVENTS_ROOT, PROBE_ROOT)
# Between a name and its thumbnails' file names: an empty path segment, which no name has,
# so the thumbnails of `a` (thumbs/<uid>/a//...) never mix with those of `a/b`.
THUMBNAIL_SEPARATOR = "//"
# The longest file name of a thumbnail under its name's prefix: "<size>.<format>", 512.webp
# (thumbnails.py checks that its sizes and formats fit).
THUMBNAIL_FILE_BYTES = 8
USER_ID_LENGTH = 64  # hex digits of SHA-256
# files/ + 64 hex digits + /: every user's prefix has this length.
USER_PREFIX_BYTES = len(FILES_ROOT) + USER_ID_LENGTH + 1
MAX_NAME_BYTES = MAX_KEY_BYTES - USER_PREFIX_BYTES

# The canonical 8-4-4-4-12 text form only: no braces, no urn:uuid:, no
# missing hyphens, so one user has exactly one spelling up to letter case.
_TOKEN_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# C0 controls, DEL and the C1 controls: invisible in listings and shells,
# and NUL cuts strings short in too many tools.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What XML 1.0 cannot carry besides controls and surrogates (which UTF-8 cannot
# carry either: see below): U+FFFE and U+FFFF: S3 names keys in XML (listings, DeleteObjects,
# CreateMultipartUpload's answer), so a key holding one breaks every listing that
# reaches it, for every user. The other 64 Unicode noncharacters (U+FDD0-U+FDEF, the
# last two of every plane) go with them: never meant for interchange.
_NONCHARACTER_RE = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
    + "]"
)


def is_valid_token(token: str) -> bool:
    return _TOKEN_RE.fullmatch(token) is not None


def user_id(token: str) -> str:
    """The one-way id of a valid token: SHA-256 hex of its lower-case form."""
    return hashlib.sha256(token.lower().encode("ascii")).hexdigest()


def user_prefix(uid: str) -> str:
    """Where the user's files live."""
    return f"{FILES_ROOT}{uid}/"


def user_prefixes(uid: str) -> tuple[str, ...]:
    """Every per-user prefix that holds anything of the user's (the library holds the rest)."""
    return tuple(f"{root}{uid}/" for root in USER_ROOTS)


def validate_name(name: str) -> str:
    """Return `name` unchanged if it can be stored, else raise InvalidName.

    A name is UTF-8 text whose `/`-separated segments are all non-empty and
    none is `.` or `..`, without control characters or Unicode noncharacters
    (which S3's XML cannot carry), short enough that the
    full key fits S3's 1,024 bytes.
    """
    if not name:
        raise InvalidName("the file name is empty")
    if _CONTROL_RE.search(name):
        raise InvalidName("the file name contains a control character")
    if _NONCHARACTER_RE.search(name):
        raise InvalidName("the file name contains a Unicode noncharacter, which S3 cannot list")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: what an undecodable percent-escape turns into.
        raise InvalidName("the file name is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidName(f"the file name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidName("the file name has an empty, '.' or '..' path segment")
    return name


def file_key(uid: str, name: str) -> str:
    return user_prefix(uid) + validate_name(name)


def split_file_key(key: str) -> tuple[str, str]:
    """The user id and name of a file's key: the inverse of `file_key`."""
    root, uid, name = key.split("/", 2)
    if root + "/" != FILES_ROOT or len(uid) != USER_ID_LENGTH:
        raise ValueError(f"not a file key: {key!r}")
    return uid, name


def validate_folder(folder: str) -> str:
    """A folder is a name ending in `/` (`photos/`, `a/b/`); raise InvalidName otherwise."""
    if not folder.endswith("/"):
        raise InvalidName("a folder name ends with '/'")
    validate_name(folder[:-1])
    return folder


# The largest code point: in UTF-8 (F4 8F BF BF) it sorts after every other character.
_LAST_CHARACTER = "\U0010ffff"


def past_folder(key: str) -> str:
    """A StartAfter that skips every key under the folder `key` (which ends in /), and nothing
    after them.

    Listing with a delimiter after the folder's own key would roll its
    contents up into the same folder again; the folder followed by the last
    character, repeated up to S3's key length, is after every key in it.
    """
    room = MAX_KEY_BYTES - len(key.encode())
    return key + _LAST_CHARACTER * max(1, room // len(_LAST_CHARACTER.encode()))


def start_after(key: str) -> str:
    """What to list after `key`, a file's or a folder's (ending in /) key."""
    return past_folder(key) if key.endswith("/") else key


def marker_key(uid: str, name: str) -> str:
    """The key that says the file `name` is public (library.py)."""
    return f"{PUBLIC_ROOT}{uid}/{name}"


def expiry_key(uid: str, name: str) -> str:
    """The key that says when the file `name` expires (expiry.py)."""
    return f"{EXPIRY_ROOT}{uid}/{name}"


def thumbnails_prefix(uid: str, name: str) -> str:
    """Where the thumbnails of the file `name` are kept.

    Beside the name, so that a folder's thumbnails go with it by prefix; but a
    name of more than ~940 bytes leaves no room there for `//512.webp` within
    S3's 1,024-byte keys, so its thumbnails are kept under the SHA-256 of the
    name after `thumbs/<user id>//`, where no name's prefix reaches (a name
    never starts with /). One place per name, whatever the size or format.
    """
    prefix = f"{THUMBNAILS_ROOT}{uid}/{name}{THUMBNAIL_SEPARATOR}"
    if len(prefix.encode()) + THUMBNAIL_FILE_BYTES <= MAX_KEY_BYTES:
        return prefix
    return f"{THUMBNAILS_ROOT}{uid}{THUMBNAIL_SEPARATOR}{hashlib.sha256(name.encode()).hexdigest()}/"


def has_hashed_thumbnails(uid: str, name: str) -> bool:
    """Whether the thumbnails of `name` are kept under its hash, away from its folder."""
    return not thumbnails_prefix(uid, name).startswith(f"{THUMBNAILS_ROOT}{uid}/{name}")


def thumbnail_key(uid: str, name: str, size: int, image_format: str) -> str:
    """The key of one cached thumbnail."""
    return f"{thumbnails_prefix(uid, name)}{size}.{image_format}"
