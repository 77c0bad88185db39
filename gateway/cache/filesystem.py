"""The embedded cache: one file per image, its record in an extended attribute of the file,
sharded by id prefix.

A store writes the image under its id, then sets its record (`RECORD_XATTR`) on it: the record
is what makes an image exist, so a file without one is a store still running or the remains of
a crash (swept by `strays`), never served. Where the filesystem has no user extended attributes
(or the record is too large for one), the record goes beside the image as `<id>.json`, written
to a temporary name and renamed into place; caches written before records moved into the file
are read the same way. With `cache.fsync` the file (bytes, size and record together) and then
its folder are flushed before the link is handed out. The folder's contents are not trusted
(`folder`): no symlink is followed, no record naming another id is believed. All file work runs
in worker threads, off the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import orjson

from gateway.cache import folder, records, strays
from gateway.cache.base import (
    ByteRange,
    ImageMeta,
    ResultCache,
    StoredImage,
    new_image_id,
    valid_id,
)
from gateway.cache.direct import NewFile
from gateway.errors import StorageError
from gateway.settings import CacheSettings

SPILL_AT = 2 * 1024 * 1024
READ_CHUNK = 256 * 1024
MIB = 1024 * 1024
T = TypeVar("T")


class _Writer:
    """The blocking half of a store: runs only in worker threads."""

    def __init__(self, root: Path, sync: bool) -> None:
        self.root = root
        self.id = ""
        """Drawn here, in the worker thread: its `getrandom` would give up the loop's GIL."""
        self.sync = sync
        self.digest = hashlib.sha256()
        self.shard = -1
        self.out: NewFile | None = None

    @property
    def record(self) -> str:
        return f"{self.id}{records.BESIDE}"

    @property
    def temporary(self) -> str:
        return f".{self.record}.part"

    def write(self, parts: list[bytes]) -> None:
        if self.out is None:
            self.id = new_image_id()
            self.shard = folder.make_shard(self.root, self.id[:2], self.sync)
            self.out = NewFile(self.id, dir_fd=self.shard)
        for part in parts:
            self.digest.update(part)
            self.out.write(part)

    def commit(self, parts: list[bytes], record: StoredImage) -> StoredImage:
        """Image, then its record, then (with `sync`) the file and its folder entry."""
        self.write(parts)
        assert self.out is not None
        self.out.finish()
        image = dataclasses.replace(
            record, id=self.id, size=self.out.size, sha256=self.digest.hexdigest()
        )
        raw = orjson.dumps(image.to_json())
        in_file = records.put(self.out.fd, raw)
        self.out.close(sync=self.sync)
        if not in_file:
            folder.write_file(self.shard, self.temporary, raw, self.sync)
            folder.rename(self.shard, self.temporary, self.record)
        if self.sync:
            os.fsync(self.shard)
        self._close_shard()
        return image

    def discard(self) -> None:
        """Remove every name this store may have made; the store's own error is the one told."""
        if self.out is not None:
            self.out.abandon()
        if self.shard >= 0:
            for name in (self.record, self.id, self.temporary):
                with contextlib.suppress(OSError):
                    folder.remove(self.shard, name)
            self._close_shard()

    def _close_shard(self) -> None:
        if self.shard >= 0:
            os.close(self.shard)
            self.shard = -1


class FilesystemCache(ResultCache):
    def __init__(self, root: Path, fsync: bool = True, min_free_mb: float = 0) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.min_free_bytes = int(min_free_mb * MIB)

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> FilesystemCache:
        return cls(settings.dir, settings.fsync, settings.min_free_mb)

    async def store(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str,
        meta: ImageMeta,
        dimensions: tuple[int, int] = (0, 0),
    ) -> StoredImage:
        """Buffer up to SPILL_AT in memory, then stream to a temporary file; commit in one hop.

        A typical image costs one worker-thread call (write, flush, rename, record); a larger
        one adds one call per SPILL_AT written, so memory per download stays bounded.
        """
        writer = _Writer(self.root, self.fsync)
        parts: list[bytes] = []
        pending = 0
        try:
            async for chunk in chunks:
                parts.append(chunk)
                pending += len(chunk)
                if pending >= SPILL_AT:
                    await _storing(writer.write, parts)
                    parts, pending = [], 0
            record = StoredImage("", content_type, 0, "", time.time(), meta, *dimensions)
            return await _storing(writer.commit, parts, record)
        except BaseException:
            await anyio.to_thread.run_sync(writer.discard)
            raise

    async def get(self, image_id: str) -> StoredImage | None:
        if not valid_id(image_id):
            return None
        raw = await anyio.to_thread.run_sync(self._read_record, image_id)
        return None if raw is None else StoredImage.parse(raw, image_id)

    def _read_record(self, image_id: str) -> bytes | None:
        try:
            with folder.shard(self.root, image_id[:2]) as shard:
                return records.read(shard, image_id)
        except FileNotFoundError:
            return None

    def _open_image(self, image_id: str) -> int:
        with folder.shard(self.root, image_id[:2]) as shard:
            return folder.open_file(shard, image_id)

    async def open(
        self, image: StoredImage, byte_range: ByteRange | None = None
    ) -> AsyncIterator[bytes]:
        first, last = byte_range or (0, image.size - 1)
        left = last - first + 1
        fd = await anyio.to_thread.run_sync(self._open_image, image.id)
        async with anyio.wrap_file(os.fdopen(fd, "rb")) as source:
            await source.seek(first)
            while left > 0 and (chunk := await source.read(min(READ_CHUNK, left))):
                left -= len(chunk)
                yield chunk

    async def read(self, image: StoredImage) -> bytes:
        return await anyio.to_thread.run_sync(self._read_image, image.id)

    def _read_image(self, image_id: str) -> bytes:
        with os.fdopen(self._open_image(image_id), "rb") as source:
            return source.read()

    async def writable(self) -> bool:
        return await anyio.to_thread.run_sync(self._writable)

    def _writable(self) -> bool:
        """A probe file can be made and removed, and `cache.min_free_mb` is still free."""
        probe = f".ready-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            root = os.open(self.root, folder.FOLDER_FLAGS)
            try:
                folder.remove(root, probe)
                folder.write_file(root, probe, b"ok", sync=False)
                folder.remove(root, probe)
            finally:
                os.close(root)
            space = os.statvfs(self.root)
        except OSError:
            return False
        return space.f_bavail * space.f_frsize >= self.min_free_bytes

    async def scan(self, after: str | None, limit: int) -> list[StoredImage]:
        return await anyio.to_thread.run_sync(_scan_records, self.root, after, limit)

    async def delete(self, image: StoredImage) -> None:
        await anyio.to_thread.run_sync(self._delete, image.id)

    def _delete(self, image_id: str) -> None:
        if not valid_id(image_id):
            return
        with contextlib.suppress(FileNotFoundError), folder.shard(self.root, image_id[:2]) as shard:
            folder.remove(shard, f"{image_id}{records.BESIDE}")
            folder.remove(shard, image_id)

    async def count(self) -> int:
        return await anyio.to_thread.run_sync(_count_records, self.root)

    async def remove_strays(self, after: str | None, upto: str | None, older_than_s: float) -> int:
        return await anyio.to_thread.run_sync(
            strays.remove_strays, self.root, after, upto, older_than_s
        )


async def _storing(step: Callable[..., T], *args: object) -> T:
    """One blocking step of a store; the disk's failure becomes the client's `StorageError`."""
    try:
        return await anyio.to_thread.run_sync(step, *args)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise StorageError(f"The image could not be stored: {exc.strerror} ({code}).") from exc


def _count_records(root: Path) -> int:
    """The images of every two-character shard folder, by name (a store still running, or a
    crash's remains until they are swept, count too: the count is read from names alone)."""
    count = 0
    for name in folder.shard_names(root):
        with contextlib.suppress(FileNotFoundError), folder.shard(root, name) as shard:
            count += len(_ids(os.listdir(shard)))
    return count


def _ids(names: list[str]) -> set[str]:
    """The image ids a shard's names speak of: an image's file, or an older record beside it."""
    return {i for n in names if valid_id(i := n.removesuffix(records.BESIDE))}


def _scan_records(root: Path, after: str | None, limit: int) -> list[StoredImage]:
    """The first `limit` well-formed records of ids above `after`, shard by shard in id order."""
    start = after or ""
    found: list[StoredImage] = []
    for name in folder.shard_names(root):
        if name < start[:2]:
            continue
        with contextlib.suppress(FileNotFoundError), folder.shard(root, name) as shard:
            for image_id in sorted(i for i in _ids(os.listdir(shard)) if i > start):
                raw = records.read(shard, image_id)
                image = None if raw is None else StoredImage.parse(raw, image_id)
                if image is not None:
                    found.append(image)
                if len(found) >= limit:
                    return found
    return found
