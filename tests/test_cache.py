"""The cache contract, every test body run on the filesystem and on a real S3 server; the
durable link served from either; the object store's own settings; retention."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import obstore
import openai
import orjson
import pytest

from gateway.cache import ImageMeta, ResultCache, StoredImage, open_cache, records
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.hot import HotCache
from gateway.cache.retention import RetentionSweep
from gateway.cache.s3 import S3Cache
from gateway.errors import ConfigError, StorageError
from gateway.metrics import Metrics
from gateway.settings import CacheSettings
from gateway.state.locks.memory import MemoryLocks
from tests.conftest import gateway_settings, start_gateway
from tests.helpers import Sim, image_bytes
from tests.objectstore import ANONYMOUS, S3Server

META = ImageMeta(team="design", model="flux-2-pro", request_id="req_1", upstream="agg")
DAY_S = 86400.0


@dataclass
class Backend:
    """A cache under test, its `cache` settings, and a raw view of what its storage holds."""

    name: str
    settings: dict[str, Any]
    leftovers: Callable[[], list[str]]

    @property
    def cache(self) -> ResultCache:
        return open_cache(CacheSettings(**self.settings))


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The server, and its key pair in the variables the settings name (without credentials
    the store would look for a cloud instance role)."""
    server = S3Server().start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TEST_S3_KEY", ANONYMOUS[0])
        env.setenv("TEST_S3_SECRET", ANONYMOUS[1])
        yield server
    server.stop()


def s3_settings(s3: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "s3",
        "bucket": bucket,
        "prefix": "gw",
        "endpoint_url": s3.url,
        "access_key_env": "TEST_S3_KEY",
        "secret_key_env": "TEST_S3_SECRET",
        **extra,
    }


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "filesystem":
        root = tmp_path / "images"
        return Backend(
            "filesystem",
            {"dir": str(root)},
            lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        )
    s3: S3Server = request.getfixturevalue("s3")
    bucket = s3.bucket(f"test-{secrets.token_hex(6)}")
    return Backend(
        "s3",
        s3_settings(s3, bucket),
        lambda: s3.keys(bucket) + s3.unfinished_uploads(bucket),
    )


def files_per_image(backend: Backend) -> int:
    """One file per image on a filesystem (its record rides on it); image and record on S3."""
    return 1 if backend.name == "filesystem" else 2


class Broken(Exception):
    """The upstream download failing midway."""


async def chunked(
    data: bytes, size: int = 64 * 1024, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        if fail_after is not None and offset >= fail_after:
            raise Broken("connection reset")
        yield data[offset : offset + size]


async def backdate(cache: ResultCache, image: StoredImage, days: float) -> None:
    """Rewrite an image's record as if it had been stored `days` ago (a record never changes
    in real life, so the copy this process keeps in memory is dropped too)."""
    if isinstance(cache, HotCache):
        cache.hot.drop(image.id)
        cache = cache.backend
    record = orjson.dumps(
        dataclasses.replace(image, created=image.created - days * DAY_S).to_json()
    )
    if isinstance(cache, FilesystemCache):
        path = cache.root / image.id[:2] / image.id
        if records.ATTRIBUTE in os.listxattr(path):
            os.setxattr(path, records.ATTRIBUTE, record)
        else:
            (cache.root / image.id[:2] / f"{image.id}.json").write_bytes(record)
    else:
        assert isinstance(cache, S3Cache)
        await obstore.put_async(cache.objects, f"meta/{image.id}.json", record)


async def test_store_then_read_back(backend: Backend) -> None:
    cache = backend.cache
    data = image_bytes("PNG", size=(300, 200))
    image = await cache.store(chunked(data, 1000), "image/png", META)
    assert (image.size, image.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await cache.get(image.id) == image
    assert await cache.read(image) == data
    assert b"".join([c async for c in cache.open(image)]) == data
    assert b"".join([c async for c in cache.open(image, (0, 7))]) == data[:8]
    assert b"".join([c async for c in cache.open(image, (100, 163))]) == data[100:164]
    assert await cache.count() == 1
    assert await cache.writable()


async def test_large_image_streams_through_in_parts(backend: Backend) -> None:
    cache = backend.cache
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(12 * 1024 * 1024)
    image = await cache.store(chunked(data), "image/png", META)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert await cache.read(image) == data
    assert (
        b"".join([c async for c in cache.open(image, (len(data) - 10, len(data) - 1))])
        == data[-10:]
    )


@pytest.mark.parametrize("fail_after", [32 * 1024, 7 * 1024 * 1024], ids=["one-part", "multipart"])
async def test_failed_stream_leaves_nothing(backend: Backend, fail_after: int) -> None:
    cache = backend.cache
    data = os.urandom(12 * 1024 * 1024)
    with pytest.raises(Broken):
        await cache.store(chunked(data, fail_after=fail_after), "image/png", META)
    assert await cache.scan(None, 100) == []
    assert backend.leftovers() == []


@pytest.mark.parametrize("image_id", ["A" * 32, "../../etc/passwd", "short", "A" * 31 + "/"])
async def test_unknown_or_malformed_ids_are_none(backend: Backend, image_id: str) -> None:
    assert await backend.cache.get(image_id) is None


async def test_scan_pages_in_id_order_and_delete_removes_both(backend: Backend) -> None:
    cache = backend.cache
    stored = [await cache.store(chunked(image_bytes("JPEG")), "image/jpeg", META) for _ in range(5)]
    seen: list[StoredImage] = []
    after = None
    while page := await cache.scan(after, 2):
        assert len(page) <= 2
        seen += page
        after = page[-1].id
    assert [image.id for image in seen] == sorted(image.id for image in stored)
    per_image = files_per_image(backend)
    assert len(backend.leftovers()) == 5 * per_image
    await cache.delete(stored[0])
    assert await cache.get(stored[0].id) is None
    assert stored[0].id not in [image.id for image in await cache.scan(None, 10)]
    assert len(backend.leftovers()) == 4 * per_image
    assert await cache.count() == 4


def link_gateway(sim: Sim, tmp_path: Path, cache: dict[str, Any]) -> Any:
    settings = gateway_settings(
        sim,
        tmp_path / "unused",
        cache={"allowed_result_hosts": ["127.0.0.1"], "allow_http_results": True, **cache},
    )
    return start_gateway(settings)


def upstream_bytes(sim: Sim) -> bytes:
    (result,) = sim.results()
    return httpx.get(f"{sim.url}/_sim/results/{result['id']}").content


@pytest.mark.parametrize("hot_mb", [64, 0], ids=["from-memory", "streamed"])
def test_link_serves_ranges_from_either_backend(
    backend: Backend, sim: Sim, tmp_path: Path, hot_mb: int
) -> None:
    gw = link_gateway(sim, tmp_path, {**backend.settings, "hot_mb": hot_mb})
    try:
        url = (
            gw.client()
            .images.generate(
                model="flux-2-pro", prompt="ranges", extra_body={"output_format": "png"}
            )
            .data[0]
            .url
        )
        assert url is not None and url.startswith(f"{gw.url}/images/") and url.endswith(".png")
        data = upstream_bytes(sim)
        size = len(data)
        full = httpx.get(url)
        assert (full.status_code, full.content) == (200, data)
        assert full.headers["content-type"] == "image/png"
        assert full.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
        cases = {
            "bytes=0-7": (206, data[:8], f"bytes 0-7/{size}"),
            "bytes=-4": (206, data[-4:], f"bytes {size - 4}-{size - 1}/{size}"),
            "bytes=10-": (206, data[10:], f"bytes 10-{size - 1}/{size}"),
            f"bytes=5-{size + 100}": (206, data[5:], f"bytes 5-{size - 1}/{size}"),
            f"bytes={size}-": (416, None, f"bytes */{size}"),
            "bytes=0-1,4-5": (200, data, None),
        }
        for header, (status, body, content_range) in cases.items():
            part = httpx.get(url, headers={"range": header})
            assert part.status_code == status, header
            assert part.headers.get("content-range") == content_range, header
            if body is not None:
                assert part.content == body, header
        head = httpx.head(url, headers={"range": "bytes=0-7"})
        assert (head.status_code, head.headers["content-length"], head.content) == (206, "8", b"")
        assert httpx.get(url, headers={"if-none-match": full.headers["etag"]}).status_code == 304
        stale = httpx.get(url, headers={"range": "bytes=0-7", "if-range": '"other"'})
        assert (stale.status_code, stale.content) == (200, data)
    finally:
        gw.server.stop()


def test_redirect_mode_answers_a_fresh_presigned_url(
    s3: S3Server, sim: Sim, tmp_path: Path
) -> None:
    bucket = s3.bucket(f"test-{secrets.token_hex(6)}")
    gw = link_gateway(sim, tmp_path, s3_settings(s3, bucket, redirect=True, presign_ttl_s=120))
    try:
        client: openai.OpenAI = gw.client()
        url = (
            client.images.generate(
                model="flux-2-pro", prompt="redirect", extra_body={"output_format": "png"}
            )
            .data[0]
            .url
        )
        assert url is not None and url.startswith(f"{gw.url}/images/")
        for _ in range(2):
            answer = httpx.get(url)
            assert answer.status_code == 302
            location = answer.headers["location"]
            assert location.startswith(f"{s3.url}/{bucket}/gw/images/")
            assert "X-Amz-Expires=120" in location and "X-Amz-Signature=" in location
            followed = httpx.get(location)
            assert (followed.status_code, followed.content) == (200, upstream_bytes(sim))
            assert followed.headers["content-type"] == "image/png"
    finally:
        gw.server.stop()


def test_s3_settings_are_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        open_cache(CacheSettings(backend="s3"))
    named = CacheSettings(
        backend="s3", bucket="b", access_key_env="TEST_S3_KEY", secret_key_env="TEST_S3_SECRET"
    )
    monkeypatch.setenv("TEST_S3_KEY", "id")
    monkeypatch.delenv("TEST_S3_SECRET", raising=False)
    with pytest.raises(ConfigError, match="TEST_S3_SECRET"):
        open_cache(named)
    with pytest.raises(ConfigError, match="together"):
        open_cache(CacheSettings(backend="s3", bucket="b", access_key_env="TEST_S3_KEY"))
    with pytest.raises(ValueError, match="backend"):
        CacheSettings(backend="gcs")  # type: ignore[arg-type]


async def test_credentials_come_from_the_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    server = S3Server(authenticated=True).start()
    try:
        key_id, secret = server.new_user()
        bucket = server.bucket("signed", (key_id, secret))
        settings = CacheSettings(
            backend="s3",
            bucket=bucket,
            endpoint_url=server.url,
            access_key_env="TEST_S3_KEY",
            secret_key_env="TEST_S3_SECRET",
        )
        monkeypatch.setenv("TEST_S3_KEY", key_id)
        monkeypatch.setenv("TEST_S3_SECRET", secret)
        cache = open_cache(settings)
        data = image_bytes("PNG")
        image = await cache.store(chunked(data), "image/png", META)
        assert await cache.read(image) == data
        monkeypatch.setenv("TEST_S3_SECRET", "not-the-secret")
        forged = open_cache(settings)
        assert not await forged.writable()
        with pytest.raises(StorageError):
            await forged.store(chunked(data), "image/png", META)
        assert server.keys(bucket, (key_id, secret)) == [
            f"images/{image.id}",
            f"meta/{image.id}.json",
        ]
    finally:
        server.stop()


async def test_retention_removes_old_results_in_bounded_passes(backend: Backend) -> None:
    cache = backend.cache
    stored = [await cache.store(chunked(image_bytes("PNG")), "image/png", META) for _ in range(5)]
    old, young = stored[:3], stored[3:]
    for image in old:
        await backdate(cache, image, days=31)
    settings = CacheSettings(**backend.settings, retention_days=30, sweep_batch=2)
    state, metrics = MemoryLocks(), Metrics()
    sweep = RetentionSweep(cache, state, settings, metrics)
    rival = RetentionSweep(cache, state, settings, Metrics())
    passes = [await sweep.sweep_once() for _ in range(3)]
    assert await rival.sweep_once() == 0
    assert max(passes) <= 2 and sum(passes) == 3
    assert metrics.registry.get_sample_value("gateway_retention_deleted_total") == 3
    assert [await cache.get(image.id) for image in old] == [None] * 3
    assert [await cache.get(image.id) for image in young] == young
    assert len(backend.leftovers()) == 2 * files_per_image(backend)
    await sweep.stop()
    assert await rival.sweep_once() == 0
