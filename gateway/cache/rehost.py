"""Upstream result link → verified image in the cache, before the client gets an answer.

Upstream links die after about ten minutes, so the download happens at once, retried with
backoff while the link can still be valid. At most `download_concurrency` downloads run at a
time, so memory stays bounded however many jobs finish together. Only allowed hosts are
fetched, and only at public addresses or ones listed literally (`addresses`); the body is
streamed with a size cap, must start with PNG, JPEG or WebP magic bytes and carry a header
Pillow can read. A failure of the cache itself is not retried: it is the client's
`StorageError`, which says not to retry either, as the upstream was already paid.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

from gateway import media
from gateway.cache import addresses
from gateway.cache.base import ImageMeta, ResultCache, StoredImage
from gateway.errors import RehostFailed, StorageError, UpstreamError
from gateway.http_session import LazySession
from gateway.image_header import result_size
from gateway.metrics import Metrics
from gateway.settings import CacheSettings

LINK_LIFETIME_S = 600.0
MAX_BACKOFF_S = 8.0
CONNECT_TIMEOUT_S = 10.0
READ_BUFFER = 1024 * 1024
HEADER_BYTES = 1024 * 1024
"""How much of a result is read before its header is judged (JPEG metadata can precede it)."""
WHOLE_BYTES = 2 * 1024 * 1024
"""A result of known length up to this is read in one piece (the cache buffers that much
anyway) rather than in chunks that are then copied together."""


class Rehoster:
    """Downloads results; `trust_env` (`server.trust_env`, the same rule as upstream calls)
    sends them through the environment's proxy, which then resolves the result hosts, so the
    private-address guard sees only the proxy's own address (list it if it is not public)."""

    def __init__(
        self,
        settings: CacheSettings,
        cache: ResultCache,
        metrics: Metrics,
        *,
        trust_env: bool = False,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.listed = addresses.literals(settings.allowed_result_hosts)
        self._session = LazySession(
            connector={
                "limit": 0,
                "keepalive_timeout": 30,
                "resolver": addresses.GuardedResolver(self.listed),
            },
            timeout=aiohttp.ClientTimeout(
                total=settings.download_timeout_s, sock_connect=CONNECT_TIMEOUT_S
            ),
            read_bufsize=READ_BUFFER,
            auto_decompress=True,
            trust_env=trust_env,
        )
        self.metrics = metrics
        self.max_bytes = int(settings.max_result_mb * 1024 * 1024)
        self._downloads = asyncio.Semaphore(settings.download_concurrency)

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        allowed_schemes = ("https", "http") if self.settings.allow_http_results else ("https",)
        if parts.scheme not in allowed_schemes:
            raise RehostFailed(
                "scheme", f"result link scheme {parts.scheme!r} is not allowed", False
            )
        host = parts.hostname or ""
        if not any(
            fnmatch.fnmatch(host, pattern) for pattern in self.settings.allowed_result_hosts
        ):
            raise RehostFailed(
                "host", f"result host {host!r} is not in allowed_result_hosts", False
            )
        literal = addresses.parse(host)
        if literal is not None and not addresses.permitted(literal, self.listed):
            raise RehostFailed(
                "private_address",
                f"result host {host!r} is a non-public address not listed literally",
                False,
            )

    async def rehost(self, url: str, meta: ImageMeta) -> StoredImage:
        """Download and store `url`; retried while the link may live, then a clear 502."""
        deadline = time.monotonic() + LINK_LIFETIME_S
        delay = self.settings.download_backoff_s
        attempts_left = self.settings.download_attempts
        while True:
            attempts_left -= 1
            try:
                self.check_url(url)
                async with self._downloads:
                    return await self._download(url, meta)
            except RehostFailed as exc:
                failure = exc
            except StorageError:
                self.metrics.rehost_failures.labels(reason="storage").inc()
                raise
            last = attempts_left == 0 or time.monotonic() + delay >= deadline
            if last or not failure.retryable:
                self.metrics.rehost_failures.labels(reason=failure.reason).inc()
                raise UpstreamError(
                    f"The upstream produced an image but it could not be fetched: {failure}."
                ) from failure
            self.metrics.rehost_retries.labels(reason=failure.reason).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def aclose(self) -> None:
        await self._session.aclose()

    async def _download(self, url: str, meta: ImageMeta) -> StoredImage:
        try:
            async with self._session.get().get(url, allow_redirects=False) as response:
                if response.status in (401, 403, 404, 410):
                    raise RehostFailed("expired", f"result link answered {response.status}", False)
                if response.status != 200:
                    raise RehostFailed("status", f"result link answered {response.status}", True)
                length = response.content_length
                if length is not None and length > self.max_bytes:
                    raise RehostFailed("too_large", "result is larger than max_result_mb", False)
                if length is not None and length <= WHOLE_BYTES:
                    # One buffer for the check, the hash, the write and the hot copy.
                    head, chunks = await response.read(), _nothing()
                else:
                    chunks = response.content.iter_chunked(READ_BUFFER)
                    head = await _head(chunks, min(HEADER_BYTES, self.max_bytes + 1))
                content_type, dimensions = await _checked(head)
                image = await self.cache.store(
                    self._capped(head, chunks), content_type, meta, dimensions
                )
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, addresses.RefusedAddress):
                raise RehostFailed("private_address", str(exc.os_error), False) from exc
            raise RehostFailed("network", f"download failed ({type(exc).__name__})", True) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RehostFailed("network", f"download failed ({type(exc).__name__})", True) from exc
        self.metrics.rehost_bytes.inc(image.size)
        self.metrics.cache_objects.inc()
        return image

    async def _capped(self, head: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        size = len(head)
        if size > self.max_bytes:
            raise RehostFailed("too_large", "result is larger than max_result_mb", False)
        yield head
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise RehostFailed("too_large", "result is larger than max_result_mb", False)
            yield chunk


async def _nothing() -> AsyncIterator[bytes]:
    """The rest of a body that was read whole."""
    return
    yield


async def _head(chunks: AsyncIterator[bytes], size: int) -> bytes:
    """The first `size` bytes or more, or all of a shorter stream."""
    head = bytearray()
    async for chunk in chunks:
        head += chunk
        if len(head) >= size:
            break
    return bytes(head)


async def _checked(head: bytes) -> tuple[str, tuple[int, int]]:
    """The content type (from the magic bytes) and size (from a header Pillow can read)."""
    content_type = media.sniff(head)
    if content_type is None:
        raise RehostFailed("not_image", "result is not a PNG, JPEG or WebP image", False)
    dimensions = await result_size(head)
    if dimensions is None:
        raise RehostFailed(
            "bad_header", f"result starts like {content_type} but has no readable header", False
        )
    return content_type, dimensions
