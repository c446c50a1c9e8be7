"""What the tus store's completion relies on, asked of moto's server over HTTP through the storage
layer: CompleteMultipartUpload refusing a part that is not the one recorded. (Conditional PutObject
is cas.py's, tested in test_cas.py.)"""

from __future__ import annotations

import pytest

from file_uploader.sizes import MiB
from file_uploader.storage import open_storage
from file_uploader.storage.errors import PartsChanged


async def test_moto_refuses_to_complete_with_an_overwritten_parts_etag(settings):
    async with open_storage(settings) as storage:
        s3 = storage.s3
        upload = await s3.create_multipart_upload("file")
        first = await s3.upload_part("file", upload, 1, b"a" * 5 * MiB)
        await s3.upload_part("file", upload, 1, b"b" * 5 * MiB)  # another writer, same number
        last = await s3.upload_part("file", upload, 2, b"c")
        with pytest.raises(PartsChanged):
            await s3.complete_multipart_upload("file", upload, [first, last])
        assert await s3.abort_multipart_upload("file", upload)
