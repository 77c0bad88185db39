"""Durable result storage: one interface, backends chosen by name at start-up."""

from __future__ import annotations

from collections.abc import Callable

from gateway.cache.base import ImageMeta, ResultCache, StoredImage
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.hot import HotCache, HotImages
from gateway.cache.s3 import S3Cache
from gateway.errors import CacheUnavailable, ConfigError
from gateway.settings import CacheSettings

__all__ = ["CacheUnavailable", "ImageMeta", "ResultCache", "StoredImage", "open_cache"]

BACKENDS: dict[str, Callable[[CacheSettings], ResultCache]] = {
    "filesystem": FilesystemCache.from_settings,
    "s3": S3Cache.from_settings,
}


def open_cache(settings: CacheSettings) -> ResultCache:
    """The backend that `cache.backend` names, behind `cache.hot_mb` of recent images kept in
    memory; an unknown backend is a start-up error."""
    backend = BACKENDS.get(settings.backend)
    if backend is None:
        raise ConfigError(f"cache.backend {settings.backend!r} is not available in this build")
    cache = backend(settings)
    if settings.hot_mb <= 0:
        return cache
    hot = HotImages(int(settings.hot_mb * 1024 * 1024), settings.retention_days * 86400)
    return HotCache(cache, hot)
