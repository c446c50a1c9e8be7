"""Server-side encryption the operator asks for (S3_SSE): the parameters each S3 call carries.

S3 encrypts at rest in one of three ways, each asked for per request:

- **SSE-S3** (`ServerSideEncryption: AES256`): S3's own keys. Sent where an
  object is made (PutObject, CreateMultipartUpload); the parts and reads need
  nothing.
- **SSE-KMS** (`aws:kms`, with `SSEKMSKeyId` when the operator names a key;
  else the account's AWS-managed key): also only where an object is made.
- **SSE-C**: a key the operator gives (S3_SSE_C_KEY, 32 bytes). S3 keeps only
  its MD5 to check it; every call that writes or reads the object's bytes
  must carry the key again: PutObject, CreateMultipartUpload, UploadPart,
  CompleteMultipartUpload, ListParts, GetObject (ranges too), HeadObject, and
  UploadPartCopy (for the copy source as well as the new part). A call that
  leaves it out is refused by S3 (400), so a missed call shows at once.

`client.S3` adds these to every call it makes, so nothing above the client
(files, tus state, the quota ledger, thumbnails, the write probe) can forget
them: the gateway's own small objects are encrypted like the files. None (the
default) sends nothing, and the bucket's default encryption applies.

ETags of SSE-KMS and SSE-C objects are not the MD5 of their bytes; the write
probe (probe.py) writes with these parameters too, so it finds that and does
not compare ETags there.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

from ..settings import Settings

# The values of S3_SSE (settings.S3_SSE_MODES).
NONE, SSE_S3, SSE_KMS, SSE_C = "none", "sse-s3", "sse-kms", "sse-c"


@dataclasses.dataclass(frozen=True)
class Encryption:
    """What S3_SSE, S3_SSE_KMS_KEY_ID and S3_SSE_C_KEY ask for, as botocore parameters."""

    mode: str = NONE
    kms_key_id: str | None = None
    customer_key: bytes | None = dataclasses.field(default=None, repr=False)

    def _customer(self, prefix: str = "") -> dict[str, Any]:
        if self.mode != SSE_C:
            return {}
        assert self.customer_key is not None, "S3_SSE=sse-c comes with S3_SSE_C_KEY (settings.py)"
        # The key in base64 and its MD5, as the headers carry them. botocore would make both from
        # the raw key, but only for some calls (not ListParts, which then refuses raw bytes); it
        # leaves them alone when the MD5 is given.
        return {
            f"{prefix}SSECustomerAlgorithm": "AES256",
            f"{prefix}SSECustomerKey": base64.b64encode(self.customer_key).decode(),
            f"{prefix}SSECustomerKeyMD5": base64.b64encode(
                hashlib.md5(self.customer_key, usedforsecurity=False).digest()
            ).decode(),
        }

    def create(self) -> dict[str, Any]:
        """For a call that makes an object: PutObject, CreateMultipartUpload."""
        if self.mode == SSE_S3:
            return {"ServerSideEncryption": "AES256"}
        if self.mode == SSE_KMS:
            return {
                "ServerSideEncryption": "aws:kms",
                **({"SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {}),
            }
        return self._customer()

    def use(self) -> dict[str, Any]:
        """For a call on an object's bytes that exist: UploadPart, CompleteMultipartUpload,
        ListParts, GetObject, HeadObject (only SSE-C needs anything there)."""
        return self._customer()

    def copy_source(self) -> dict[str, Any]:
        """For UploadPartCopy's source, besides `use()` for the new part."""
        return self._customer("CopySource")

    @classmethod
    def from_settings(cls, settings: Settings) -> Encryption:
        return cls(settings.s3_sse, settings.s3_sse_kms_key_id, settings.s3_sse_c_key)


NO_ENCRYPTION = Encryption()
