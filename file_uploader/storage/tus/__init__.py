"""Resumable (tus) uploads with all their state in S3, so any gateway process can continue one.

An upload is an S3 multipart upload aimed at the final key ``files/<user>/<name>``
(completing it replaces an older file atomically), plus small objects under
``uploads/<user>/<id>.``, as tusd's S3 store keeps them:

- ``<id>.info``: the record (info.py): name, length (None while deferred), the
  S3 upload id, part size, the committed parts **with the ETag S3 gave each**,
  the committed offset, the tail's key, and the state (open, completing, done).
- ``<id>.part.<offset>.<random>``: the tail, the bytes past the last full part
  (upload.py).
- ``<id>.lock``: who is writing to the upload, and until when (lock.py).

The rooms:

    info.py          the record, read and rewritten by compare-and-swap (cas.VersionedJson)
    lock.py          the writer's lock (cas.LeaseLock)
    upload.py        PATCH: append through the part pipeline, commit; Upload-Checksum
    completion.py    CompleteMultipartUpload, recovery of a cut-off completion, the Ceph workaround
    concat.py        concatenation: partial uploads joined into one file inside S3 (UploadPartCopy)
    housekeeping.py  terminate, a folder's uploads, expiry (gc)
    store.py         `Resumable`, the face the rest of the gateway uses

**Racing writers.** Two PATCHes at the same offset would each upload the next
part numbers, S3 keeping whichever UploadPart came last for each number: a
file mixed from both bodies. Three things stop that:

1. The lock. With conditional writes, taking it is a PutObject of
   ``<id>.lock`` with ``If-None-Match: *``; a lock whose lease ran out (its
   process died) is taken over with ``If-Match`` on the ETag read, so of two
   takers one wins. The holder renews it every third of its lease (LEASE_SECONDS, cas.py);
   anyone else gets UploadLocked (423). This works across processes and hosts.
2. The info is rewritten with ``If-Match`` on the ETag it was read with, so a
   commit that another commit overtook fails (UploadConflict, 409) instead of
   overwriting it.
3. CompleteMultipartUpload names each part's recorded ETag. If any part in S3
   is not the one committed (another writer overwrote it), S3 refuses with
   InvalidPart: the upload is rolled back to its last part that does match
   (HEAD tells the client where to resume) and nothing is stored.

**Without conditional writes** (an S3 the write probe finds
ignoring or refusing them), the lock is written after checking that none is held
and read back to see whose it is; two writers within the same few
milliseconds can both believe they hold it, and the info's last writer wins.
What remains guaranteed is point 3: the stored file is only ever made of the
parts one commit recorded, exactly as their writer sent them; racing writers
may lose their work (409, then resume from HEAD's offset), never mix it.
"""

from .info import Upload
from .store import Resumable
from .upload import FINAL_TAKES_NO_PATCH, UPLOAD_CHECKSUMS

__all__ = ["FINAL_TAKES_NO_PATCH", "UPLOAD_CHECKSUMS", "Resumable", "Upload"]
