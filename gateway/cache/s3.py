"""The shared cache for many replicas: any S3-compatible object store, through obstore.

Layout under `cache.prefix`: `images/<id>` holds the bytes (with their Content-Type), and
`meta/<id>.json` the record. The record is written after the image, so a visible record always
has its image; listing `meta/` in key order is what the retention sweep walks.

Uploads stream: an image that fits in one part (5 MiB, S3's smallest multipart part) is sent
with one PUT; a larger one goes out as a multipart upload of 5 MiB parts, at most two in flight,
which S3 makes visible only when complete and which obstore aborts if the stream fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
import orjson
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from gateway.cache.base import (
    IMMUTABLE,
    ByteRange,
    ImageMeta,
    ResultCache,
    StoredImage,
    new_image_id,
    prepend,
    valid_id,
)
from gateway.errors import CacheUnavailable, ConfigError, GatewayError, StorageError
from gateway.settings import CacheSettings

if TYPE_CHECKING:
    from obstore import GetOptions, ObjectMeta

PART_SIZE = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
READ_CHUNK = 256 * 1024
SCAN_READS = 16
CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(minutes=5)
RETRY_TIMEOUT = timedelta(seconds=10)


class S3Cache(ResultCache):
    def __init__(self, objects: S3Store) -> None:
        self.objects = objects
        self._probe = f".ready/{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> S3Cache:
        """The store the `cache` section describes; what is missing is a start-up error."""
        if not settings.bucket:
            raise ConfigError('cache.backend = "s3" needs cache.bucket')
        config: dict[str, object] = {}
        if settings.region:
            config["region"] = settings.region
        if settings.endpoint_url:
            config["endpoint"] = settings.endpoint_url.rstrip("/")
            config["virtual_hosted_style_request"] = False
        credentials = settings.s3_credentials()
        if credentials is not None:
            config["access_key_id"], config["secret_access_key"] = credentials
        store = S3Store(
            settings.bucket,
            prefix=settings.prefix.strip("/") or None,
            client_options={
                "allow_http": (settings.endpoint_url or "").startswith("http://"),
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": REQUEST_TIMEOUT,
            },
            retry_config={"max_retries": 2, "retry_timeout": RETRY_TIMEOUT},
            **config,  # type: ignore[arg-type]
        )
        return cls(store)

    async def store(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str,
        meta: ImageMeta,
        dimensions: tuple[int, int] = (0, 0),
    ) -> StoredImage:
        image_id = new_image_id()
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        stream = counted()
        head, more = await _take(stream, PART_SIZE)
        body: bytes | AsyncIterator[bytes] = prepend(head, stream) if more else head
        with _storage_errors(StorageError):
            await obstore.put_async(
                self.objects,
                _image_key(image_id),
                body,
                attributes={"Content-Type": content_type, "Cache-Control": IMMUTABLE},
                use_multipart=more,
                chunk_size=PART_SIZE,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        image = StoredImage(
            image_id, content_type, size, digest.hexdigest(), time.time(), meta, *dimensions
        )
        record = orjson.dumps(image.to_json())
        with _storage_errors(StorageError):
            try:
                await obstore.put_async(self.objects, _meta_key(image_id), record)
            except BaseError:
                await obstore.delete_async(self.objects, _image_key(image_id))
                raise
        return image

    async def get(self, image_id: str) -> StoredImage | None:
        if not valid_id(image_id):
            return None
        return await self._record(image_id)

    async def _record(self, image_id: str) -> StoredImage | None:
        try:
            with _storage_errors():
                result = await obstore.get_async(self.objects, _meta_key(image_id))
                raw = await result.bytes_async()
        except FileNotFoundError:
            return None
        return StoredImage.parse(bytes(raw), image_id)

    async def open(
        self, image: StoredImage, byte_range: ByteRange | None = None
    ) -> AsyncIterator[bytes]:
        options: GetOptions = {}
        if byte_range is not None:
            options["range"] = (byte_range[0], byte_range[1] + 1)
        with _storage_errors():
            result = await obstore.get_async(self.objects, _image_key(image.id), options=options)
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)

    async def read(self, image: StoredImage) -> bytes:
        with _storage_errors():
            result = await obstore.get_async(self.objects, _image_key(image.id))
            return bytes(await result.bytes_async())

    async def writable(self) -> bool:
        try:
            await obstore.put_async(self.objects, self._probe, b"ok")
            await obstore.delete_async(self.objects, self._probe)
        except BaseError:
            return False
        return True

    async def scan(self, after: str | None, limit: int) -> list[StoredImage]:
        offset = _meta_key(after) if after else None
        with _storage_errors():
            listing = obstore.list(self.objects, prefix="meta", offset=offset, chunk_size=limit)
            page: Sequence[ObjectMeta] = await anext(listing, [])
        ids = sorted(i for m in page if (i := _record_id(m["path"])) is not None)
        gate = asyncio.Semaphore(SCAN_READS)

        async def read(image_id: str) -> StoredImage | None:
            async with gate:
                return await self._record(image_id)

        records = await asyncio.gather(*(read(image_id) for image_id in ids))
        return [r for r in records if r is not None]

    async def delete(self, image: StoredImage) -> None:
        with _storage_errors():
            await obstore.delete_async(self.objects, _meta_key(image.id))
            await obstore.delete_async(self.objects, _image_key(image.id))

    async def presign(self, image: StoredImage, ttl_s: float) -> str | None:
        expires = timedelta(seconds=ttl_s)
        with _storage_errors():
            return await obstore.sign_async(self.objects, "GET", _image_key(image.id), expires)

    async def count(self) -> int:
        total = 0
        with _storage_errors():
            async for page in obstore.list(self.objects, prefix="meta", chunk_size=1000):
                total += sum(1 for m in page if _record_id(m["path"]) is not None)
        return total


def _image_key(image_id: str) -> str:
    return f"images/{image_id}"


def _meta_key(image_id: str) -> str:
    return f"meta/{image_id}.json"


def _record_id(key: str) -> str | None:
    """The id a record's key names, or None for any other key."""
    name = key.rsplit("/", 1)[-1]
    image_id = name.removesuffix(".json")
    return image_id if image_id != name and valid_id(image_id) else None


@contextlib.contextmanager
def _storage_errors(failure: type[GatewayError] = CacheUnavailable) -> Iterator[None]:
    """obstore's failures become the cache's own (`failure`: a read may be retried, a store of
    a paid image may not); a missing key is FileNotFoundError, as on disk."""
    try:
        yield
    except NotFoundError as exc:
        raise FileNotFoundError(str(exc)) from exc
    except BaseError as exc:
        raise failure(f"The image store failed ({type(exc).__name__}).") from exc


async def _take(stream: AsyncIterator[bytes], size: int) -> tuple[bytes, bool]:
    """The first `size` bytes or more, and whether the stream goes on after them."""
    head = bytearray()
    async for chunk in stream:
        head += chunk
        if len(head) >= size:
            return bytes(head), True
    return bytes(head), False
