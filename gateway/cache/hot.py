"""Recent images in memory: a bounded LRU in front of any cache backend.

An image is fetched right after it is made, and galleries fetch it again and again, so the
bytes a store has just written are kept (up to `cache.hot_mb` in all, none larger than
`HOT_ITEM_MAX`) and a durable link is answered from memory, with no worker-thread read and no
disk. Nothing here is served stale: an id names one immutable image for its whole life, an
entry goes when this process deletes the image, and a durable link is answered from memory
only while the store confirmed the image within the last `TRUST_S` seconds — so an image
removed behind this process's back (by hand, or by another replica's retention sweep) stops
being served within that time. `get` always asks the store.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.cache.base import ByteRange, ImageMeta, ResultCache, StoredImage

HOT_ITEM_MAX = 8 * 1024 * 1024
"""Larger images are streamed from the backend: one of them would push out many small ones."""
TRUST_S = 5.0
"""How long the store's word that an image exists is taken for durable-link GETs."""


class HotImages:
    """The LRU itself: image id → entry, at most `max_bytes` of image bytes in all."""

    def __init__(self, max_bytes: int, max_age_s: float, item_max: int = HOT_ITEM_MAX) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.item_max = min(item_max, max_bytes)
        self.size = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, image_id: str) -> _Entry | None:
        entry = self._entries.get(image_id)
        if entry is None:
            return None
        if entry.image.created < time.time() - self.max_age_s:
            self.drop(image_id)
            return None
        self._entries.move_to_end(image_id)
        return entry

    def put(self, image: StoredImage, data: bytes) -> None:
        """Keep `data` as the bytes of `image` (just confirmed by the store), unless they are
        not all of it or too large."""
        if len(data) != image.size or image.size > self.item_max:
            return
        self.drop(image.id)
        self._entries[image.id] = _Entry(image, data, time.monotonic())
        self.size += len(data)
        while self.size > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.size -= len(old.data)

    def drop(self, image_id: str) -> None:
        entry = self._entries.pop(image_id, None)
        if entry is not None:
            self.size -= len(entry.data)


@dataclass
class _Entry:
    image: StoredImage
    data: bytes
    confirmed: float
    """When the store last said the image exists (monotonic seconds)."""

    def trusted(self) -> bool:
        return time.monotonic() - self.confirmed < TRUST_S


class HotCache(ResultCache):
    """A backend with the most recent images kept in memory (`HotImages`)."""

    def __init__(self, backend: ResultCache, hot: HotImages) -> None:
        self.backend = backend
        self.hot = hot

    async def store(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str,
        meta: ImageMeta,
        dimensions: tuple[int, int] = (0, 0),
    ) -> StoredImage:
        kept: list[bytes] = []

        async def tee() -> AsyncIterator[bytes]:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size <= self.hot.item_max:
                    kept.append(chunk)
                else:
                    kept.clear()
                yield chunk

        image = await self.backend.store(tee(), content_type, meta, dimensions)
        if kept:
            self.hot.put(image, kept[0] if len(kept) == 1 else b"".join(kept))
        return image

    async def get(self, image_id: str) -> StoredImage | None:
        image = await self.backend.get(image_id)
        entry = self.hot.get(image_id)
        if image is None:
            self.hot.drop(image_id)
        elif entry is not None:
            entry.confirmed = time.monotonic()
        return image

    async def get_recent(self, image_id: str) -> StoredImage | None:
        entry = self.hot.get(image_id)
        if entry is not None and entry.trusted():
            return entry.image
        return await self.get(image_id)

    async def open(
        self, image: StoredImage, byte_range: ByteRange | None = None
    ) -> AsyncIterator[bytes]:
        data = await self.whole(image)
        if data is None:
            async for chunk in self.backend.open(image, byte_range):
                yield chunk
            return
        first, last = byte_range or (0, image.size - 1)
        yield data[first : last + 1]

    async def read(self, image: StoredImage) -> bytes:
        data = await self.whole(image)
        return data if data is not None else await self.backend.read(image)

    async def whole(self, image: StoredImage) -> bytes | None:
        """All the bytes of `image` from memory, or read in one piece and kept; None for an
        image too large to keep (stream it instead)."""
        entry = self.hot.get(image.id)
        if entry is not None:
            return entry.data
        if image.size > self.hot.item_max:
            return None
        data = await self.backend.read(image)
        self.hot.put(image, data)
        return data

    async def writable(self) -> bool:
        return await self.backend.writable()

    async def scan(self, after: str | None, limit: int) -> list[StoredImage]:
        return await self.backend.scan(after, limit)

    async def delete(self, image: StoredImage) -> None:
        self.hot.drop(image.id)
        await self.backend.delete(image)

    async def remove_strays(self, after: str | None, upto: str | None, older_than_s: float) -> int:
        return await self.backend.remove_strays(after, upto, older_than_s)

    async def presign(self, image: StoredImage, ttl_s: float) -> str | None:
        return await self.backend.presign(image, ttl_s)

    async def count(self) -> int:
        return await self.backend.count()
