"""What the tus locks and commits rely on, asked of moto's server over HTTP through the storage layer:
conditional PutObject, and CompleteMultipartUpload refusing a part that is not the one recorded.
(A startup probe can ask any S3 the same; see docs/hostile-clients.md for other engines.)"""

from __future__ import annotations

import dataclasses

import pytest

from file_uploader.sizes import MiB
from file_uploader.storage import open_storage
from file_uploader.storage.errors import PartsChanged, PreconditionFailed


async def test_moto_honours_if_none_match_and_if_match_on_put_object(settings):
    async with open_storage(settings) as storage:
        s3 = storage.s3
        first = await s3.put_if("lock", b"one", absent=True)
        with pytest.raises(PreconditionFailed):
            await s3.put_if("lock", b"two", absent=True)
        second = await s3.put_if("lock", b"three", etag=first)
        with pytest.raises(PreconditionFailed):
            await s3.put_if("lock", b"four", etag=first)  # a stale ETag
        assert await s3.read_versioned("lock") == (b"three", second)


async def test_without_conditional_writes_the_condition_is_not_sent(settings):
    async with open_storage(dataclasses.replace(settings, s3_conditional_writes=False)) as storage:
        await storage.s3.put_if("key", b"one", absent=True)
        await storage.s3.put_if("key", b"two", absent=True)  # an S3 without them would do this
        assert await storage.s3.read_object("key") == b"two"


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
