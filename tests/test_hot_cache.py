"""Recent images kept in memory (`cache.hot_mb`): bounded, never stale, never another id's."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gateway.cache.base import ImageMeta, StoredImage
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.hot import TRUST_S, HotCache, HotImages
from tests.conftest import gateway_settings, start_gateway
from tests.helpers import Sim, image_bytes
from tests.test_cache import chunked

META = ImageMeta(team="design", model="flux-2-pro", request_id="req_1", upstream="agg")
MIB = 1024 * 1024


class CountingCache(FilesystemCache):
    """A filesystem cache that counts the reads that reach it."""

    reads = 0

    async def read(self, image: StoredImage) -> bytes:
        self.reads += 1
        return await super().read(image)


def noise_png(side: int) -> bytes:
    """An incompressible PNG of about side² × 3 bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


def hot_cache(root: Path, max_bytes: int = 8 * MIB) -> tuple[HotCache, CountingCache]:
    backend = CountingCache(root)
    return HotCache(backend, HotImages(max_bytes, max_age_s=30 * 86400)), backend


async def test_a_stored_image_is_answered_from_memory_with_its_own_bytes(tmp_path: Path) -> None:
    cache, backend = hot_cache(tmp_path)
    pictures = [image_bytes("PNG", size=(64 + i, 64)) for i in range(3)]
    stored = [await cache.store(chunked(data, 1000), "image/png", META) for data in pictures]
    for image, data in zip(stored, pictures, strict=True):
        assert await cache.get_recent(image.id) == image
        assert await cache.whole(image) == data
        assert b"".join([c async for c in cache.open(image, (2, 9))]) == data[2:10]
    assert backend.reads == 0


async def test_memory_stays_within_its_bound_and_the_oldest_go_first(tmp_path: Path) -> None:
    cache, backend = hot_cache(tmp_path, max_bytes=3 * MIB)
    one_mib = [noise_png(560) for _ in range(5)]
    assert all(MIB / 2 < len(data) <= MIB for data in one_mib)
    stored = [await cache.store(chunked(data), "image/png", META) for data in one_mib]
    assert cache.hot.size <= 3 * MIB
    assert len(cache.hot) == 3 * MIB // max(len(d) for d in one_mib)
    assert await cache.whole(stored[0]) == one_mib[0]
    assert backend.reads == 1  # the oldest was pushed out and read back once
    assert await cache.whole(stored[-1]) == one_mib[-1]
    assert backend.reads == 1


async def test_a_deleted_image_is_never_answered_from_memory(tmp_path: Path) -> None:
    cache, _ = hot_cache(tmp_path)
    image = await cache.store(chunked(image_bytes("PNG")), "image/png", META)
    await cache.delete(image)
    assert await cache.get_recent(image.id) is None
    assert len(cache.hot) == 0


async def test_an_image_removed_behind_its_back_goes_once_the_store_is_asked_again(
    tmp_path: Path,
) -> None:
    """Another replica's sweep (or an operator) removed the file: within TRUST_S the copy in
    memory may still answer a link; after it the store is asked and says no."""
    cache, _ = hot_cache(tmp_path)
    image = await cache.store(chunked(image_bytes("PNG")), "image/png", META)
    await FilesystemCache(tmp_path).delete(image)
    entry = cache.hot.get(image.id)
    assert entry is not None
    entry.confirmed = time.monotonic() - TRUST_S - 1
    assert await cache.get_recent(image.id) is None
    assert cache.hot.get(image.id) is None
    assert await cache.get(image.id) is None  # `get` always asks the store


async def test_an_image_past_retention_is_not_answered_from_memory(tmp_path: Path) -> None:
    cache, _ = hot_cache(tmp_path)
    image = await cache.store(chunked(image_bytes("PNG")), "image/png", META)
    old = dataclasses.replace(image, created=image.created - 31 * 86400)
    cache.hot.put(old, await cache.backend.read(image))
    assert cache.hot.get(image.id) is None


async def test_an_image_larger_than_an_entry_is_streamed_from_the_store(tmp_path: Path) -> None:
    cache, backend = hot_cache(tmp_path, max_bytes=MIB // 4)
    data = noise_png(400)
    image = await cache.store(chunked(data), "image/png", META)
    assert len(cache.hot) == 0
    assert await cache.whole(image) is None
    assert b"".join([c async for c in cache.open(image)]) == data
    assert backend.reads == 0  # streamed through `open`, never read whole


@pytest.mark.parametrize("hot_mb", [64, 0])
def test_many_links_each_answer_their_own_bytes(sim: Sim, tmp_path: Path, hot_mb: int) -> None:
    settings = gateway_settings(
        sim,
        tmp_path / "images",
        cache={"allowed_result_hosts": ["127.0.0.1"], "allow_http_results": True, "hot_mb": hot_mb},
    )
    gw = start_gateway(settings)
    try:
        client = gw.client()
        urls = [
            client.images.generate(model="flux-2-pro", prompt=f"p{i}", extra_body={"seed": i})
            .data[0]
            .url
            for i in range(6)
        ]
        produced = [httpx.get(f"{sim.url}/_sim/results/{r['id']}").content for r in sim.results()]
        with httpx.Client() as http:
            for _ in range(2):
                served = [http.get(str(url)).content for url in urls]
                assert served == produced
        assert len(set(produced)) == 6
    finally:
        gw.server.stop()
