"""Outgrowing one machine: replicas sharing Redis and an object store, retention swept by one,
several workers on one port, and a SIGTERM that loses nothing in flight."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys import hash_key
from tests.helpers import RedisServer, Sim, free_port, gateway_process, wait_http, write_config
from tests.objectstore import ANONYMOUS, S3Server

KEY = "sk-test-scale-0123456789"
S3_ENV = {"TEST_S3_KEY": ANONYMOUS[0], "TEST_S3_SECRET": ANONYMOUS[1]}
DAY_S = 86400.0
POLL_S = 30.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


def config(tmp_path: Path, name: str, port: int, sim: Sim, sections: str, team: str = "") -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        f"""
[server]
port = {port}
drain_s = 30

{sections}

[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{sim.url}/v1"
keys = {json.dumps(sim.keys)}
models = ["flux-2-pro"]
max_concurrency_per_key = 50

[[teams]]
name = "scale"
key_hashes = ["{hash_key(KEY)}"]
{team}
""",
    )


def shared_sections(redis: RedisServer, s3: S3Server, bucket: str, hot_mb: int = 32) -> str:
    return f"""
[state]
backend = "redis"
redis_url = "{redis.url}"

[cache]
backend = "s3"
bucket = "{bucket}"
prefix = "gw"
endpoint_url = "{s3.url}"
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true
retention_days = 30
sweep_interval_s = 0.2
sweep_batch = 1
hot_mb = {hot_mb}
"""


def generate(url: str, prompt: str = "x") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/images/generations",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "flux-2-pro", "prompt": prompt, "output_format": "png"},
        timeout=60,
    )


def link_path(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url[url.index("/images/") :]


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return sum(s.value for s in samples if s.name == name)


def poll(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + POLL_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def backdate(s3: S3Server, bucket: str, path: str, days: float) -> None:
    """Rewrite an image's record in the bucket as if it had been stored `days` ago."""
    key = f"gw/meta/{path.rsplit('/', 1)[1].split('.')[0]}.json"
    client = s3.client()
    record = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    record["created"] -= days * DAY_S
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())


def upstream_digests(sim: Sim) -> list[str]:
    return sorted(
        hashlib.sha256(httpx.get(f"{sim.url}/_sim/results/{r['id']}").content).hexdigest()
        for r in sim.results()
    )


def test_replicas_share_links_and_one_of_them_sweeps(
    tmp_path: Path, sim: Sim, redis_server: RedisServer, s3: S3Server
) -> None:
    redis_server.flush()
    bucket = s3.bucket("replicas")
    # The records are backdated behind the replicas' backs, which a real record never is: the
    # copies in memory would keep their true age (their own expiry: tests/test_hot_cache.py).
    sections = shared_sections(redis_server, s3, bucket, hot_mb=0)
    urls = []
    with ExitStack() as stack:
        for name in ("a", "b"):
            port = free_port()
            stack.enter_context(
                gateway_process(config(tmp_path, name, port, sim, sections), port, S3_ENV)
            )
            urls.append(f"http://127.0.0.1:{port}")
        a, b = urls
        paths = [link_path(generate(a, f"image {i}")) for i in range(8)]
        served = [httpx.get(b + path) for path in paths]
        assert [r.status_code for r in served] == [200] * 8
        assert sorted(hashlib.sha256(r.content).hexdigest() for r in served) == upstream_digests(
            sim
        )
        old, young = paths[:6], paths[6:]
        for path in old:
            backdate(s3, bucket, path, days=31)
        # One record per pass every 0.2 s: two sweepers without the lock would share the work.
        poll(lambda: sum(metric(u, "gateway_retention_deleted_total") for u in urls) >= 6)
        deleted = sorted(metric(u, "gateway_retention_deleted_total") for u in urls)
        assert deleted == [0, 6]
        assert [httpx.get(u + p).status_code for u in urls for p in old] == [404] * 12
        assert [httpx.get(u + p).status_code for u in urls for p in young] == [200] * 4
    assert len(s3.keys(bucket)) == 4


@contextmanager
def workers_process(
    config_path: Path, port: int, workers: int, env: dict[str, str]
) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)]
        + ["--port", str(port), "--workers", str(workers)],
        env={**os.environ, "GATEWAY_SERVER__DRAIN_GRACE_S": "0", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_workers_share_one_port_limits_and_metrics(
    tmp_path: Path, sim: Sim, redis_server: RedisServer, s3: S3Server
) -> None:
    redis_server.flush()
    sections = shared_sections(redis_server, s3, s3.bucket("workers"))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**S3_ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with workers_process(config(tmp_path, "w", port, sim, sections, "rpm = 5"), port, 2, env):
        assert not (metrics_dir / "counter_999999.db").exists()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: generate(url, f"w{i}"), range(12)))
        assert sorted(r.status_code for r in answers) == [200] * 5 + [429] * 7
        assert len(sim.bodies()) == 5
        assert metric(url, "gateway_images_total") == 5
        paths = [link_path(r) for r in answers if r.status_code == 200]
        assert all(httpx.get(url + p).status_code == 200 for p in paths)


def test_sigterm_finishes_every_generation_in_flight(tmp_path: Path, sim: Sim) -> None:
    sections = f"""
[cache]
dir = "{tmp_path / "cache"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true
"""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = config(tmp_path, "drain", port, sim, sections)
    sim.faults(latency=2.0)
    with gateway_process(path, port, {"GATEWAY_SERVER__DRAIN_GRACE_S": "3"}) as process:
        with ThreadPoolExecutor(50) as pool:
            pending = [pool.submit(generate, url, f"in flight {i}") for i in range(50)]
            poll(lambda: len(sim.bodies()) == 50)
            process.send_signal(signal.SIGTERM)
            ready = httpx.get(f"{url}/readyz")
            assert (ready.status_code, ready.json()["checks"]["accepting"]) == (503, False)
            late = generate(url, "too late")
            assert late.status_code == 503
            assert late.json()["error"]["code"] == "draining"
            answers = [future.result() for future in pending]
        assert process.wait(timeout=60) is not None
    assert [r.status_code for r in answers] == [200] * 50
    assert len(sim.bodies()) == 50
    sim.faults()
    with gateway_process(path, port):
        served = [httpx.get(url + link_path(r)) for r in answers]
    assert [r.status_code for r in served] == [200] * 50
    assert sorted(hashlib.sha256(r.content).hexdigest() for r in served) == upstream_digests(sim)
