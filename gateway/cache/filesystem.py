"""The embedded cache: one file per image plus a JSON record, sharded by id prefix.

Writes go to a temporary file in the target folder and are renamed into place, so a reader
never sees half an image; all file work runs in worker threads, off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import orjson

from gateway.cache.base import (
    ByteRange,
    ImageMeta,
    ResultCache,
    StoredImage,
    new_image_id,
    valid_id,
)
from gateway.cache.direct import NewFile

SPILL_AT = 2 * 1024 * 1024
READ_CHUNK = 256 * 1024


class _Writer:
    """The blocking half of a store: runs only in worker threads."""

    def __init__(self, data_path: Path, meta_path: Path) -> None:
        self.data_path = data_path
        self.meta_path = meta_path
        self.tmp = data_path.with_name(f".{data_path.name}.part")
        self.digest = hashlib.sha256()
        self.out: NewFile | None = None

    def write(self, parts: list[bytes]) -> None:
        if self.out is None:
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            self.out = NewFile(str(self.tmp))
        for part in parts:
            self.digest.update(part)
            self.out.write(part)

    def commit(self, parts: list[bytes], record: dict[str, Any]) -> StoredImage:
        self.write(parts)
        assert self.out is not None
        self.out.close()
        os.replace(self.tmp, self.data_path)
        image = StoredImage.from_json(
            {
                **record,
                "size": self.out.size,
                "sha256": self.digest.hexdigest(),
                "created": time.time(),
            }
        )
        _write_atomically(self.meta_path, orjson.dumps(image.to_json()))
        return image

    def discard(self) -> None:
        if self.out is not None:
            self.out.abandon()
        self.tmp.unlink(missing_ok=True)


class FilesystemCache(ResultCache):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        folder = self.root / image_id[:2]
        return folder / image_id, folder / f"{image_id}.json"

    def local_path(self, image: StoredImage) -> Path:
        return self._paths(image.id)[0]

    async def store(
        self, chunks: AsyncIterator[bytes], content_type: str, meta: ImageMeta
    ) -> StoredImage:
        """Buffer up to SPILL_AT in memory, then stream to a temporary file; commit in one hop.

        A typical image costs one worker-thread call (write, hash, rename, record); a larger
        one adds one call per SPILL_AT written, so memory per download stays bounded.
        """
        image_id = new_image_id()
        writer = _Writer(*self._paths(image_id))
        parts: list[bytes] = []
        pending = 0
        try:
            async for chunk in chunks:
                parts.append(chunk)
                pending += len(chunk)
                if pending >= SPILL_AT:
                    await anyio.to_thread.run_sync(writer.write, parts)
                    parts, pending = [], 0
            record = {"id": image_id, "content_type": content_type, "meta": asdict(meta)}
            return await anyio.to_thread.run_sync(writer.commit, parts, record)
        except BaseException:
            await anyio.to_thread.run_sync(writer.discard)
            raise

    async def get(self, image_id: str) -> StoredImage | None:
        if not valid_id(image_id):
            return None
        try:
            raw = await anyio.Path(self._paths(image_id)[1]).read_bytes()
        except FileNotFoundError:
            return None
        return StoredImage.from_json(orjson.loads(raw))

    async def open(
        self, image: StoredImage, byte_range: ByteRange | None = None
    ) -> AsyncIterator[bytes]:
        first, last = byte_range or (0, image.size - 1)
        left = last - first + 1
        async with await anyio.open_file(self.local_path(image), "rb") as source:
            await source.seek(first)
            while left > 0 and (chunk := await source.read(min(READ_CHUNK, left))):
                left -= len(chunk)
                yield chunk

    async def read(self, image: StoredImage) -> bytes:
        return await anyio.Path(self.local_path(image)).read_bytes()

    async def writable(self) -> bool:
        probe = self.root / f".ready-{os.getpid()}"
        try:
            await anyio.Path(self.root).mkdir(parents=True, exist_ok=True)
            await anyio.Path(probe).write_bytes(b"ok")
            await anyio.Path(probe).unlink()
        except OSError:
            return False
        return True

    async def scan(self, after: str | None, limit: int) -> list[StoredImage]:
        records = await anyio.to_thread.run_sync(_scan_records, self.root, after, limit)
        return [StoredImage.from_json(orjson.loads(raw)) for raw in records]

    async def delete(self, image: StoredImage) -> None:
        data_path, meta_path = self._paths(image.id)
        await anyio.Path(meta_path).unlink(missing_ok=True)
        await anyio.Path(data_path).unlink(missing_ok=True)

    async def count(self) -> int:
        return await anyio.to_thread.run_sync(_count_records, self.root)


def _count_records(root: Path) -> int:
    """Every image has one `<id>.json` record in its two-character shard folder."""
    if not root.is_dir():
        return 0
    count = 0
    for shard in root.iterdir():
        if len(shard.name) != 2:
            continue
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            names = os.listdir(shard)
            count += sum(1 for n in names if n.endswith(".json") and valid_id(n[: -len(".json")]))
    return count


def _scan_records(root: Path, after: str | None, limit: int) -> list[bytes]:
    """The raw records of the first `limit` ids above `after`, shard by shard in id order."""
    if not root.is_dir():
        return []
    start = after or ""
    records: list[bytes] = []
    for shard in sorted(n for n in os.listdir(root) if len(n) == 2 and n >= start[:2]):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            ids = sorted(
                n.removesuffix(".json") for n in os.listdir(root / shard) if n.endswith(".json")
            )
            for image_id in ids:
                if image_id <= start or not valid_id(image_id):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    records.append((root / shard / f"{image_id}.json").read_bytes())
                if len(records) >= limit:
                    return records
    return records


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
