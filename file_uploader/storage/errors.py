"""Every error the storage layer raises. The HTTP layer maps them to statuses in one table
(`api/errors.py`); nothing here knows HTTP."""

from __future__ import annotations

import re


class StorageFailure(Exception):
    """Base of every error the storage layer raises."""

    # S3's error code when S3 answered with one (NoSuchKey, BadDigest, ...), for metrics.
    s3_code: str | None = None

    @property
    def code(self) -> str:
        """The error's kind in snake_case (ChecksumMismatch -> checksum_mismatch), for metrics."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class FileNotFound(StorageFailure):
    pass


class RangeNotSatisfiable(StorageFailure):
    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file's {size} bytes")
        self.size = size


class StorageUnavailable(StorageFailure):
    """S3 could not be reached, or asked us to slow down: worth retrying later."""


class StorageBusy(StorageUnavailable):
    """The gateway's own limits: no S3 connection of the request's kind, or no memory or disk
    for an upload's parts, came free in time. Worth retrying later, like S3 being busy."""


class StorageError(StorageFailure):
    """S3 answered with an error; `s3_code` is S3's error code (None: the gateway found the fault)."""

    def __init__(self, message: str, s3_code: str | None = None) -> None:
        super().__init__(message)
        self.s3_code = s3_code


class PreconditionFailed(StorageError):
    """A conditional write (If-None-Match, If-Match) or read (IfMatch) found the object not as
    required: 412, another version."""


class TransferCorrupted(StorageError):
    """The bytes S3 received are not those the gateway sent: S3 refused them for their checksum
    (BadDigest), or the ETag it answered is not the MD5 the gateway computed."""


class PartsChanged(StorageFailure):
    """CompleteMultipartUpload refused a part: its ETag is not the one recorded (InvalidPart)."""


class InvalidName(StorageFailure, ValueError):
    """A file name that cannot be stored safely; the message says why."""


class TooManyUploads(StorageFailure):
    """The user already runs MAX_UPLOADS_PER_USER uploads in this process."""


class TooLarge(StorageFailure):
    """The bytes run past a limit: MAX_FILE_SIZE, or a resumable upload's declared length."""


# Resumable (tus) uploads.


class UploadNotFound(StorageFailure):
    pass


class UploadExpired(StorageFailure):
    pass


class OffsetMismatch(StorageFailure):
    def __init__(self, offset: int) -> None:
        super().__init__(f"the upload is at offset {offset}")
        self.offset = offset


class LengthConflict(StorageFailure):
    """Upload-Length contradicts the upload's length or offset."""


class ChecksumMismatch(StorageFailure):
    """The bytes do not match the checksum the client sent with them."""


class ConcatInvalid(StorageFailure):
    """A concatenation names no partial upload, one twice, or an upload that is not partial."""


class ConcatUnfinished(StorageFailure):
    """A concatenation names a partial upload that does not have all its bytes yet."""


class FinalUpload(StorageFailure):
    """A final upload (a concatenation) takes no bytes of its own."""


# Thumbnails.


class NotAnImage(StorageFailure):
    """The file is not an image the gateway makes thumbnails of (PNG, JPEG, WebP, GIF)."""


class ImageTooLarge(StorageFailure):
    """The image has more pixels, or more bytes, than a thumbnail may be made from."""


class FileChanged(StorageFailure):
    """The file is another version than the one a link was made for."""


class FolderNotFound(FileNotFound):
    """Nothing is stored under the folder."""


# Resumable uploads: locks and compare-and-swap commits.


class UploadLocked(StorageFailure):
    """Another request (on this process or another) is writing to the upload right now."""


class UploadConflict(StorageFailure):
    """Another request changed the upload while this one wrote to it; nothing of this one was kept
    past what the upload's state now says (HEAD tells the offset to resume from)."""


# Quotas (USER_QUOTA).


class QuotaExceeded(StorageFailure):
    """The upload does not fit in what is left of the user's quota (uploads in progress count)."""

    may_wait = False  # a growing lease older than every other: room may come free (quotas/ledger.py)


class ReservationLost(StorageUnavailable):
    """The upload's room in the quota could not be renewed in time (S3 failing): it may have been
    given to another upload, so this one is not stored."""


# Share links and upload requests (grants.py, links.py, requests.py).


class LinkNotFound(StorageFailure):
    """No link has that id: it never existed, or it was revoked."""


class LinkExpired(StorageFailure):
    """The link's time has passed."""


class LinkUsedUp(StorageFailure):
    """The link has served all the downloads it was given."""


class PasswordRequired(StorageFailure):
    """The link has a password, and none or a wrong one came (the two are not told apart)."""


class LinkBlocked(StorageFailure):
    """Too many wrong passwords came for the link: refused for `seconds` more."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"too many wrong passwords for this link: try again in {max(1, round(seconds))} s")
        self.seconds = seconds


class RequestFull(StorageFailure):
    """The upload request has taken all the files it was given."""


class FileExists(StorageFailure):
    """A file of that name is there already, and the caller may only add files."""


class DirectPartsRefused(StorageFailure):
    """A direct upload's parts in S3 are not the parts the gateway signed (storage/direct.py)."""
