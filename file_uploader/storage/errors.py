"""Every error the storage layer raises. The HTTP layer maps them to statuses in one table
(`api/errors.py`); nothing here knows HTTP."""

from __future__ import annotations

import re


class StorageFailure(Exception):
    """Base of every error the storage layer raises."""

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
    """S3 answered with an error."""


class PreconditionFailed(StorageFailure):
    """A conditional write (If-Match / If-None-Match) or read (IfMatch) found another version."""


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


class UploadLocked(StorageFailure):
    """Another request (on this process or another) is writing to the upload right now."""


class UploadConflict(StorageFailure):
    """Another request changed the upload while this one wrote to it; nothing of this one was kept
    past what the upload's state now says (HEAD tells the offset to resume from)."""
