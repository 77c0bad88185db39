"""A hostile cache folder and hostile result hosts: records naming other paths, planted symlinks
and FIFOs, hosts allowed by name that resolve to the gateway's own network, results that start
like an image and are not one; and the durable link's own edges (huge Range numbers, nosniff)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.cache.addresses import is_public, parse
from gateway.cache.base import ImageMeta, StoredImage, new_image_id
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.rehost import Rehoster
from gateway.cache.retention import RetentionSweep
from gateway.errors import RehostFailed
from gateway.metrics import Metrics
from gateway.settings import CacheSettings
from gateway.state.locks.memory import MemoryLocks
from tests.conftest import Gateway, GatewayFactory, gateway_settings, start_gateway
from tests.helpers import Sim, ThreadServer, image_bytes

META = ImageMeta(team="design", model="flux-2-pro", request_id="req_1", upstream="agg")
LONG_AGO = time.time() - 90 * 86400


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


def stored(root: Path) -> StoredImage:
    return asyncio.run(
        FilesystemCache(root).store(chunks_of(image_bytes("PNG")), "image/png", META)
    )


def old_record(image: StoredImage, **fields: object) -> bytes:
    return orjson.dumps({**image.to_json(), "created": LONG_AGO, **fields})


def sweep(root: Path) -> int:
    cache = FilesystemCache(root)
    settings = CacheSettings(dir=root, retention_days=30)
    return asyncio.run(RetentionSweep(cache, MemoryLocks(), settings, Metrics()).sweep_once())


@pytest.fixture
def served(sim: Sim) -> Iterator[list[Gateway]]:
    """Gateways started on a test's own cache folder (after the test planted its files)."""
    started: list[Gateway] = []
    yield started
    for gw in started:
        gw.server.stop()


def serve(sim: Sim, root: Path, started: list[Gateway]) -> Gateway:
    gw = start_gateway(gateway_settings(sim, root))
    started.append(gw)
    return gw


def test_sweep_never_deletes_outside_the_cache_for_a_record_naming_a_path(
    tmp_path: Path,
) -> None:
    root = tmp_path / "deep" / "cache"
    image = stored(root)
    planted = root / image.id[:2] / f"{image.id[:2]}{new_image_id()[2:]}.json"
    planted.write_bytes(old_record(image, id="../x"))
    victims = [tmp_path / "x", tmp_path / "x.json"]
    for victim in victims:
        victim.write_bytes(b"outside the cache")
    assert sweep(root) == 0
    assert [victim.read_bytes() for victim in victims] == [b"outside the cache"] * 2


def test_record_naming_another_image_neither_serves_nor_deletes_it(
    tmp_path: Path, sim: Sim, served: list[Gateway]
) -> None:
    root = tmp_path / "cache"
    image = stored(root)
    impostor = f"{image.id[:2]}{new_image_id()[2:]}"
    (root / image.id[:2] / f"{impostor}.json").write_bytes(old_record(image))
    assert sweep(root) == 0
    assert asyncio.run(FilesystemCache(root).get(image.id)) == image
    gw = serve(sim, root, served)
    assert httpx.get(f"{gw.url}/images/{impostor}.png").status_code == 404
    assert httpx.get(f"{gw.url}/images/{image.filename}").status_code == 200


def test_symlinked_image_file_is_not_served(
    tmp_path: Path, sim: Sim, served: list[Gateway]
) -> None:
    root = tmp_path / "cache"
    image = stored(root)
    secret = tmp_path / "secret"
    secret.write_bytes(b"S" * image.size)
    data = root / image.id[:2] / image.id
    data.unlink()
    data.symlink_to(secret)
    gw = serve(sim, root, served)
    answer = httpx.get(f"{gw.url}/images/{image.filename}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_symlinked_shard_folder_is_neither_served_nor_swept(
    tmp_path: Path, sim: Sim, served: list[Gateway]
) -> None:
    """A shard folder replaced by a symlink to a folder outside, holding a valid-looking image."""
    root = tmp_path / "cache"
    outside = tmp_path / "outside"
    image = stored(outside)
    (outside / image.id[:2] / f"{image.id}.json").write_bytes(old_record(image))
    root.mkdir()
    (root / image.id[:2]).symlink_to(outside / image.id[:2])
    planted = sorted(p.name for p in (outside / image.id[:2]).iterdir())
    assert asyncio.run(FilesystemCache(root).get(image.id)) is None
    assert asyncio.run(FilesystemCache(root).count()) == 0
    assert sweep(root) == 0
    assert sorted(p.name for p in (outside / image.id[:2]).iterdir()) == planted
    gw = serve(sim, root, served)
    assert httpx.get(f"{gw.url}/images/{image.filename}").status_code == 404
    assert sorted(p.name for p in (outside / image.id[:2]).iterdir()) == planted


def test_fifo_in_place_of_an_image_is_404_not_a_hang(
    tmp_path: Path, sim: Sim, served: list[Gateway]
) -> None:
    root = tmp_path / "cache"
    image = stored(root)
    data = root / image.id[:2] / image.id
    data.unlink()
    os.mkfifo(data)
    gw = serve(sim, root, served)
    answer = httpx.get(f"{gw.url}/images/{image.filename}", timeout=10)
    assert answer.status_code == 404


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "::1",
        "fc00::1",
        "fe80::1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_private_loopback_and_link_local_addresses_are_not_public(address: str) -> None:
    parsed = parse(address)
    assert parsed is not None and not is_public(parsed)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"])
def test_internet_addresses_are_public(address: str) -> None:
    parsed = parse(address)
    assert parsed is not None and is_public(parsed)


def test_private_address_literal_needs_a_literal_listing(tmp_path: Path) -> None:
    """A wildcard allows names, never a private address written as the host."""

    def rehoster(hosts: list[str]) -> Rehoster:
        settings = CacheSettings(dir=tmp_path, allowed_result_hosts=hosts, allow_http_results=True)
        return Rehoster(settings, FilesystemCache(tmp_path), Metrics())

    with pytest.raises(RehostFailed) as caught:
        rehoster(["*"]).check_url("http://169.254.169.254/latest/meta-data")
    assert (caught.value.reason, caught.value.retryable) == ("private_address", False)
    rehoster(["169.254.169.254"]).check_url("http://169.254.169.254/latest/meta-data")
    rehoster(["*"]).check_url("https://8.8.8.8/sample.png")


def stats(sim: Sim) -> dict[str, int]:
    return dict(sim.client.get(f"{sim.url}/_sim/stats").json())


def test_result_host_allowed_by_name_but_resolving_to_loopback_is_refused(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway(cache={"allowed_result_hosts": ["localhost"]})
    port = httpx.URL(sim.url).port
    sim.faults(result_host=f"localhost:{port}")
    downloads = stats(sim)["result_downloads"]
    with pytest.raises(openai.InternalServerError) as caught:
        gw.client().images.generate(model="flux-2-pro", prompt="loopback")
    error = caught.value.response.json()["error"]
    assert (caught.value.status_code, error["code"]) == (502, "upstream_error")
    assert "'localhost' resolves only to non-public addresses" in error["message"]
    assert stats(sim)["result_downloads"] == downloads
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'gateway_rehost_failures_total{reason="private_address"} 1.0' in metrics


BROKEN = {
    "png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
    "jpeg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
    "webp": b"RIFF\x08\x08\x00\x00WEBP" + bytes(range(256)) * 8,
}


@pytest.fixture
def lying_host(request: pytest.FixtureRequest) -> Iterator[str]:
    """A result host whose every sample starts with the magic bytes of `request.param` and
    then has no image header."""
    kind: str = request.param

    async def sample(request: Request) -> Response:
        return Response(BROKEN[kind], media_type=f"image/{kind}")

    app = Starlette(routes=[Route("/results/{result_id}/sample.{ext}", sample)])
    server = ThreadServer(app).start()
    yield f"127.0.0.1:{server.port}"
    server.stop()


@pytest.mark.parametrize("lying_host", list(BROKEN), indirect=True)
def test_result_with_image_magic_but_no_readable_header_is_refused(
    fresh_gateway: GatewayFactory, sim: Sim, lying_host: str
) -> None:
    gw = fresh_gateway()
    sim.faults(result_host=lying_host)
    answer = gw.post()
    error = answer.json()["error"]
    assert (answer.status_code, error["code"]) == (502, "upstream_error")
    assert "but has no readable header" in error["message"]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'gateway_rehost_failures_total{reason="bad_header"} 1.0' in metrics
    cache_dir = gw.settings.cache.dir
    assert not cache_dir.exists() or not [p for p in cache_dir.rglob("*") if p.is_file()]


@pytest.fixture
def link(gateway: Gateway) -> str:
    answer = gateway.client().images.generate(
        model="flux-2-pro", prompt="edges", extra_body={"output_format": "png"}
    )
    assert answer.data is not None and answer.data[0].url is not None
    return answer.data[0].url


def test_range_with_a_5000_digit_number_is_416_or_clipped(link: str) -> None:
    whole = httpx.get(link).content
    huge = "9" * 5000
    past = httpx.get(link, headers={"range": f"bytes={huge}-"})
    assert (past.status_code, past.headers["content-range"]) == (416, f"bytes */{len(whole)}")
    both = httpx.get(link, headers={"range": f"bytes={huge}-{huge}"})
    assert both.status_code == 416
    clipped = httpx.get(link, headers={"range": f"bytes=0-{huge}"})
    assert (clipped.status_code, clipped.content) == (206, whole)
    suffix = httpx.get(link, headers={"range": f"bytes=-{huge}"})
    assert (suffix.status_code, suffix.content) == (206, whole)
    padded = httpx.get(link, headers={"range": f"bytes={'0' * 5000}4-{'0' * 5000}7"})
    assert (padded.status_code, padded.content) == (206, whole[4:8])


def test_every_durable_link_answer_says_nosniff(link: str) -> None:
    etag = httpx.get(link).headers["etag"]
    answers = [
        httpx.get(link),
        httpx.head(link),
        httpx.get(link, headers={"range": "bytes=0-7"}),
        httpx.get(link, headers={"if-none-match": etag}),
        httpx.get(link, headers={"range": "bytes=999999999-"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 206, 304, 416]
    assert {a.headers.get("x-content-type-options") for a in answers} == {"nosniff"}
