"""Durable links: `{base_url}/images/{id}.{ext}` and the stored image behind one."""

from __future__ import annotations

from gateway.cache import ResultCache, StoredImage

IMAGE_PATH = "/images/"


class Links:
    """This gateway's own result links, made and resolved against its cache."""

    def __init__(self, cache: ResultCache, base_url: str) -> None:
        self.cache = cache
        self.prefix = base_url + IMAGE_PATH

    def url(self, image: StoredImage) -> str:
        return self.prefix + image.filename

    def own(self, url: str) -> bool:
        return url.startswith(self.prefix)

    async def by_url(self, url: str) -> StoredImage | None:
        """The stored image behind one of this gateway's durable links."""
        return await self.by_name(url.removeprefix(self.prefix).split("?", 1)[0])

    async def by_name(self, name: str) -> StoredImage | None:
        image_id, _, _ext = name.partition(".")
        image = await self.cache.get_recent(image_id)
        if image is None or image.filename != name:
            return None
        return image
