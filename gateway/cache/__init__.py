"""Durable result storage: one interface, backends chosen by name at start-up."""

from __future__ import annotations

from gateway.cache.base import ImageMeta, ResultCache, StoredImage
from gateway.cache.filesystem import FilesystemCache
from gateway.errors import ConfigError
from gateway.settings import CacheSettings

__all__ = ["ImageMeta", "ResultCache", "StoredImage", "open_cache"]


def open_cache(settings: CacheSettings) -> ResultCache:
    """The backend that `cache.backend` names; an unknown one is a start-up error."""
    if settings.backend == "filesystem":
        return FilesystemCache(settings.dir)
    raise ConfigError(f"cache.backend {settings.backend!r} is not available in this build")
