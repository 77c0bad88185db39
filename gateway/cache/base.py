"""The result cache interface: store a verified image stream once, read it back forever."""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from pydantic import TypeAdapter, ValidationError

from gateway import media

_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
IMMUTABLE = "public, max-age=31536000, immutable"
"""The Cache-Control of every stored image: an id never names other bytes."""


def new_image_id() -> str:
    """An unguessable id: 192 random bits, URL-safe, 32 characters."""
    return secrets.token_urlsafe(24)


def valid_id(image_id: str) -> bool:
    """Ids are checked before any storage access, so no path trick can reach outside the cache."""
    return _ID.fullmatch(image_id) is not None


@dataclass(frozen=True)
class ImageMeta:
    """Who made an image and how: recorded beside it for usage, galleries and retention."""

    team: str
    model: str
    request_id: str
    upstream: str
    seed: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class StoredImage:
    id: str
    content_type: str
    size: int
    sha256: str
    created: float
    meta: ImageMeta
    width: int = 0
    height: int = 0
    """Read from the stored image's header; 0 in records written before sizes were kept."""

    @property
    def filename(self) -> str:
        return f"{self.id}.{media.EXTENSIONS[self.content_type]}"

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def parse(cls, raw: bytes, image_id: str) -> StoredImage | None:
        """The record stored under `image_id`, or None if it is not a well-formed one for it.

        Records live in storage the gateway does not fully control: one naming another id
        (`"../x"`, or a real image's) would make a delete or a read act on that other name.
        """
        try:
            image = _RECORD.validate_json(raw)
        except ValidationError:
            return None
        if image.id != image_id or not valid_id(image.id) or image.size < 0:
            return None
        return image if image.content_type in media.EXTENSIONS else None


_RECORD = TypeAdapter(StoredImage)


ByteRange = tuple[int, int]
"""An inclusive byte range `(first, last)`, as HTTP `Range` names it."""


class ResultCache(ABC):
    """Where results live. `store` consumes a stream whose header is already checked."""

    @abstractmethod
    async def store(
        self,
        chunks: AsyncIterator[bytes],
        content_type: str,
        meta: ImageMeta,
        dimensions: tuple[int, int] = (0, 0),
    ) -> StoredImage:
        """Write the stream and its record, both or neither; a failure of the storage itself
        is a `StorageError` (the image was paid for: the client must not retry)."""

    @abstractmethod
    async def get(self, image_id: str) -> StoredImage | None:
        """The record of an image, or None for an unknown or malformed id."""

    async def get_recent(self, image_id: str) -> StoredImage | None:
        """The record for a durable-link GET: `get`, or a copy kept in memory that the store
        confirmed a moment ago."""
        return await self.get(image_id)

    @abstractmethod
    def open(self, image: StoredImage, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        """The bytes of a stored image (or of one range of it), as a stream."""

    async def read(self, image: StoredImage) -> bytes:
        return b"".join([chunk async for chunk in self.open(image)])

    async def whole(self, image: StoredImage) -> bytes | None:
        """All the bytes in one piece, where that is cheap (kept in memory); None: stream them
        with `open`."""
        return None

    @abstractmethod
    async def writable(self) -> bool:
        """Whether a write would succeed now and there is room for more (for readiness)."""

    @abstractmethod
    async def scan(self, after: str | None, limit: int) -> list[StoredImage]:
        """Up to `limit` records in id order, starting after the id `after` (None: the first).

        Fewer than `limit` means the end was reached: a sweep resumes where it stopped and
        wraps around, so each pass reads a bounded number of records.
        """

    @abstractmethod
    async def delete(self, image: StoredImage) -> None:
        """Remove an image and its record; the record goes first, so no link outlives it."""

    async def remove_strays(self, after: str | None, upto: str | None, older_than_s: float) -> int:
        """Remove what a crash left half-made (temporary files, an image without its record or
        a record without its image) among the ids after `after` up to `upto` (None: no bound),
        once older than `older_than_s`; how many entries went. Stores still running are
        younger than that, so they are never touched."""
        return 0

    async def presign(self, image: StoredImage, ttl_s: float) -> str | None:
        """A short-lived direct URL to the bytes, where the backend can sign one."""
        return None

    @abstractmethod
    async def count(self) -> int:
        """How many images are stored (the `gateway_cache_objects` gauge)."""


async def prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A stream whose first chunk was already read (to sniff it or to fail early) made whole."""
    yield head
    async for chunk in rest:
        yield chunk
