"""Storage faults after the upstream was paid: one upstream job, a 502 the SDKs do not retry,
what was stored kept, nothing half-written; readiness below the free-space floor; durable
writes; what a crash leaves behind swept away.

A full disk is made without root: the gateway runs as a process whose RLIMIT_FSIZE caps the
size of any file it writes, so the kernel answers a write past the cap with a real EFBIG
(Python ignores SIGXFSZ), exactly where the cache writes an image or its record.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.cache import records
from gateway.cache.base import ImageMeta, StoredImage, new_image_id
from gateway.cache.direct import BLOCK
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.retention import STRAY_AGE_S, RetentionSweep
from gateway.metrics import Metrics
from gateway.settings import CacheSettings
from gateway.sim import SimConfig, create_sim_app
from gateway.state.locks.memory import MemoryLocks
from tests.conftest import CLIENT_KEY, GatewayFactory, gateway_settings, start_gateway
from tests.helpers import Sim, ThreadServer, free_port, image_bytes, running, write_config

META = ImageMeta(team="design", model="flux-2-pro", request_id="req_1", upstream="agg")
CAPPED_SERVE = """
import resource, signal, sys
cap = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def files_in(root: Path) -> list[str]:
    """Every file under the cache folder, temporary ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def stats(sim: Sim) -> dict[str, Any]:
    return dict(sim.client.get(f"{sim.url}/_sim/stats").json())


@contextmanager
def capped_gateway(sim: Sim, cache_dir: Path, file_cap: int) -> Iterator[str]:
    """`flux-gateway serve` as a process that cannot write a file larger than `file_cap`."""
    port = free_port()
    config = write_config(
        cache_dir.parent / f"gateway-{port}.toml",
        f"""
[server]
port = {port}
public_base_url = "http://127.0.0.1:{port}"

[cache]
dir = "{cache_dir}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true

[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{sim.url}/v1"
keys = {orjson.dumps(sim.keys).decode()}
models = ["flux-2-pro"]

[[teams]]
name = "design"
keys = ["{CLIENT_KEY}"]
""",
    )
    argv = [sys.executable, "-c", CAPPED_SERVE, str(file_cap), "serve", "--config", str(config)]
    url = f"http://127.0.0.1:{port}"
    env = {"GATEWAY_SERVER__DRAIN_GRACE_S": "0"}
    with running(argv + ["--port", str(port)], f"{url}/healthz", env, subprocess.DEVNULL):
        yield url


def sdk(url: str) -> openai.OpenAI:
    """The official SDK with its default retries (two), as applications run it."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=2)


def test_full_disk_answers_storage_error_once_despite_sdk_retries(sim: Sim, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    submits = stats(sim)["submits"]
    with (
        capped_gateway(sim, cache_dir, file_cap=BLOCK) as url,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        sdk(url).images.generate(model="flux-2-pro", prompt="a full disk")
    answer = caught.value.response
    assert answer.status_code == 502
    assert answer.headers["x-should-retry"] == "false"
    assert answer.json() == {
        "error": {
            "message": "The image could not be stored: File too large (EFBIG).",
            "type": "server_error",
            "param": None,
            "code": "storage_error",
        }
    }
    assert stats(sim)["submits"] - submits == 1
    assert files_in(cache_dir) == []


@pytest.fixture(scope="module")
def tiny_sim() -> Iterator[Sim]:
    """A simulator whose every result is a PNG of about 1 KiB (it fits the file cap)."""
    keys = ["tiny-key"]
    server = ThreadServer(create_sim_app(SimConfig(keys=keys, result_kib=1))).start()
    sim = Sim(server.url, keys)
    yield sim
    sim.close()
    server.stop()


def test_failed_record_write_leaves_neither_image_nor_record(tiny_sim: Sim, tmp_path: Path) -> None:
    """The image fits the cap, its record (holding a long prompt) does not."""
    cache_dir = tmp_path / "cache"
    prompt = "a record too large to write " * 300
    with capped_gateway(tiny_sim, cache_dir, file_cap=BLOCK) as url:
        answer = httpx.post(
            f"{url}/v1/images/generations",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "flux-2-pro", "prompt": prompt},
            timeout=60,
        )
        (result,) = tiny_sim.results()
        produced = httpx.get(f"{tiny_sim.url}/_sim/results/{result['id']}").content
    assert len(produced) < BLOCK < len(prompt)
    assert (answer.status_code, answer.json()["error"]["code"]) == (502, "storage_error")
    assert answer.headers["x-should-retry"] == "false"
    assert files_in(cache_dir) == []


def sizes_by_seed(sim: Sim, prompt: str, seeds: range) -> dict[int, bytes]:
    """What the upstream makes for each seed (it is deterministic), asked of it directly."""
    made = {}
    for seed in seeds:
        answer = sim.client.post(
            f"{sim.url}/v1/images/generations",
            headers={"authorization": f"Bearer {sim.keys[0]}"},
            json={"model": "flux-2-pro", "prompt": prompt, "seed": seed},
        )
        link = answer.json()["data"][0]["url"]
        made[seed] = sim.client.get(link).content
    return made


def blocks(data: bytes) -> int:
    return -(-len(data) // BLOCK)


def test_fan_out_keeps_the_images_stored_before_the_disk_filled(sim: Sim, tmp_path: Path) -> None:
    """n=3 where one image is a block larger than the cap the other two fit under."""
    prompt = "three of a kind"
    made = sizes_by_seed(sim, prompt, range(1, 31))
    base = next(
        s
        for s in range(1, 29)
        if sorted(blocks(made[s + i]) for i in range(3))[1]
        < max(blocks(made[s + i]) for i in range(3))
    )
    trio = [made[base + i] for i in range(3)]
    cap = sorted(blocks(data) for data in trio)[1] * BLOCK
    kept = [data for data in trio if blocks(data) * BLOCK <= cap]
    assert len(kept) == 2
    cache_dir = tmp_path / "cache"
    submits = stats(sim)["submits"]
    with capped_gateway(sim, cache_dir, file_cap=cap) as url:
        answer = sdk(url).images.generate(
            model="flux-2-pro", prompt=prompt, n=3, extra_body={"seed": base}
        )
        served = [httpx.get(item.url).content for item in answer.data or [] if item.url]
        metrics = httpx.get(f"{url}/metrics").text
    assert stats(sim)["submits"] - submits == 3
    assert sorted(served) == sorted(kept)
    assert 'gateway_images_total{model="flux-2-pro",team="design"} 2.0' in metrics
    assert 'gateway_rehost_failures_total{reason="storage"} 1.0' in metrics
    assert len(files_in(cache_dir)) == 2  # one file per image, its record on it
    assert not [name for name in files_in(cache_dir) if name.endswith(".part")]


def test_readyz_fails_below_the_free_space_floor(
    fresh_gateway: GatewayFactory, tmp_path: Path
) -> None:
    roomy = httpx.get(f"{fresh_gateway(cache={'min_free_mb': 0}).url}/readyz")
    assert (roomy.status_code, roomy.json()["checks"]["cache"]) == (200, True)
    disk = os.statvfs(tmp_path)
    floor_mb = 2 * disk.f_blocks * disk.f_frsize / 2**20
    full = httpx.get(f"{fresh_gateway(cache={'min_free_mb': floor_mb}).url}/readyz")
    assert (full.status_code, full.json()["ready"], full.json()["checks"]["cache"]) == (
        503,
        False,
        False,
    )


def test_readyz_fails_when_the_cache_cannot_be_written(
    fresh_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_bytes(b"not a folder")
    gw = fresh_gateway(cache={"dir": tmp_path / "a-file" / "images", "min_free_mb": 0})
    answer = httpx.get(f"{gw.url}/readyz")
    assert (answer.status_code, answer.json()["checks"]["cache"]) == (503, False)


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), 64 * 1024):
        yield data[offset : offset + 64 * 1024]


class Syscalls:
    """Records the flushes and renames the cache makes under `root` (calling the real ones)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.events: list[tuple[str, str]] = []
        self.records_at_fsync: list[object] = []
        """The record on each flushed file at the moment of its flush (None: it has none)."""
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.startswith(str(self.root)):
                try:
                    self.records_at_fsync.append(orjson.loads(os.getxattr(fd, records.ATTRIBUTE)))
                except OSError:
                    self.records_at_fsync.append(None)
            self._note("fsync", path)
            real_fsync(fd)

        def rename(source: str, target: str, **dir_fds: int) -> None:
            self._note("rename", f"{source} -> {target}")
            real_rename(source, target, **dir_fds)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)

    def _note(self, call: str, what: str) -> None:
        if call == "rename" or what.startswith(str(self.root)):
            self.events.append((call, what.removeprefix(str(self.root))))


async def test_store_flushes_image_record_and_folder_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    calls = Syscalls(root, monkeypatch)
    image = await FilesystemCache(root).store(chunks_of(image_bytes("PNG")), "image/png", META)
    shard, name = f"/{image.id[:2]}", image.id
    # The record is on the image file, so one flush of the file carries bytes and record.
    assert calls.events == [("fsync", ""), ("fsync", f"{shard}/{name}"), ("fsync", shard)]
    assert calls.records_at_fsync == [None, image.to_json(), None]


async def test_a_record_too_large_for_the_file_is_written_beside_it_and_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    calls = Syscalls(root, monkeypatch)
    long = ImageMeta("design", "flux-2-pro", "req_1", "agg", prompt="a lighthouse " * 2000)
    cache = FilesystemCache(root)
    image = await cache.store(chunks_of(image_bytes("PNG")), "image/png", long)
    shard, name = f"/{image.id[:2]}", image.id
    assert calls.events == [
        ("fsync", ""),
        ("fsync", f"{shard}/{name}"),
        ("fsync", f"{shard}/.{name}.json.part"),
        ("rename", f".{name}.json.part -> {name}.json"),
        ("fsync", shard),
    ]
    assert sorted(files_in(root)) == sorted([f"{name[:2]}/{name}", f"{name[:2]}/{name}.json"])
    assert await cache.get(image.id) == image
    assert await cache.count() == 1


async def test_store_without_fsync_flushes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    calls = Syscalls(root, monkeypatch)
    cache = FilesystemCache.from_settings(CacheSettings(dir=root, fsync=False))
    image = await cache.store(chunks_of(image_bytes("PNG")), "image/png", META)
    assert calls.events == []
    assert await cache.get(image.id) == image


@pytest.fixture
def crashed_cache(tmp_path: Path) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """A cache folder with one whole image and what crashes leave behind:
    (root, the strays, what must stay)."""
    root = tmp_path / "images"
    cache = FilesystemCache(root)
    good = asyncio.run(cache.store(chunks_of(image_bytes("PNG")), "image/png", META))
    shard = root / good.id[:2]
    ids = [good.id[:2] + new_image_id()[2:] for _ in range(5)]
    record = orjson.dumps({**good.to_json(), "id": ids[3]})
    strays = [
        shard / f".{ids[0]}.part",
        shard / f".{ids[1]}.json.part",
        shard / ids[2],  # an image whose record was never set
        shard / f"{ids[3]}.json",  # a record beside no image
    ]
    for path in strays:
        path.write_bytes(record if path.name.endswith(".json") else b"\x89PNG half")
    young = shard / ids[4]
    young.write_bytes(b"\x89PNG a store still running")
    unrelated = [shard / "notes.txt", root / "README"]
    for path in unrelated:
        path.write_bytes(b"not the cache's")
    # An image of a cache written before records moved into the file: the record beside it.
    legacy_id = good.id[:2] + new_image_id()[2:]
    legacy = [shard / legacy_id, shard / f"{legacy_id}.json"]
    legacy[0].write_bytes((shard / good.id).read_bytes())
    legacy[1].write_bytes(orjson.dumps({**good.to_json(), "id": legacy_id}))
    crash = time.time() - STRAY_AGE_S - 60
    for path in [*strays, *unrelated, *legacy, shard / good.id]:
        os.utime(path, (crash, crash))
    keep = [shard / good.id, young, *unrelated, *legacy]
    yield root, strays, keep


def test_strays_of_a_crash_are_gone_after_start(
    crashed_cache: tuple[Path, list[Path], list[Path]], sim: Sim
) -> None:
    root, strays, keep = crashed_cache
    gw = start_gateway(gateway_settings(sim, root))
    try:
        assert [path for path in strays if path.exists()] == []
        assert [path for path in keep if path.exists()] == keep
        good = StoredImage.parse(os.getxattr(keep[0], records.ATTRIBUTE), keep[0].name)
        legacy = StoredImage.parse(keep[-1].read_bytes(), keep[-2].name)
        assert good is not None and legacy is not None
        for image, path in ((good, keep[0]), (legacy, keep[-2])):
            served = httpx.get(f"{gw.url}/images/{image.filename}")
            assert (served.status_code, served.content) == (200, path.read_bytes())
    finally:
        gw.server.stop()


async def test_strays_of_a_crash_are_gone_after_a_retention_sweep(
    crashed_cache: tuple[Path, list[Path], list[Path]],
) -> None:
    root, strays, keep = crashed_cache
    cache = FilesystemCache(root)
    sweep = RetentionSweep(cache, MemoryLocks(), CacheSettings(dir=root), Metrics())
    assert await sweep.sweep_once() == 0
    assert [path for path in strays if path.exists()] == []
    assert [path for path in keep if path.exists()] == keep
    assert await cache.count() == 3  # the good, the legacy and the young image
