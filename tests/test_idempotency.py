"""Idempotency records keep links to cached images, not the images: small in Redis, and the
replay is the first answer byte for byte."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import redis

from tests.conftest import gateway_settings, start_gateway
from tests.helpers import RedisServer, Sim

KEY = "sk-test-idempotent-0123456789"


def test_a_b64_json_answer_is_stored_as_links_and_replayed_byte_for_byte(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    redis_server.flush()
    settings = gateway_settings(sim, tmp_path / "cache", teams=[{"name": "t", "keys": [KEY]}])
    settings.state.backend = "redis"
    settings.state.redis_url = redis_server.url
    gw = start_gateway(settings)
    request = {
        "headers": {"authorization": f"Bearer {KEY}", "idempotency-key": "render-7"},
        "json": {
            "model": "flux-2-pro",
            "prompt": "a lighthouse",
            "n": 3,
            "response_format": "b64_json",
        },
        "timeout": 60,
    }
    try:
        first = httpx.post(f"{gw.url}/v1/images/generations", **request)  # type: ignore[arg-type]
        replay = httpx.post(f"{gw.url}/v1/images/generations", **request)  # type: ignore[arg-type]
    finally:
        gw.server.stop()
    assert first.status_code == replay.status_code == 200, first.text
    assert replay.headers["x-idempotent-replay"] == "true"
    assert replay.content == first.content
    images = [base64.b64decode(item["b64_json"]) for item in first.json()["data"]]
    delivered = [httpx.get(f"{sim.url}/_sim/results/{r['id']}").content for r in sim.results()]
    assert sorted(images) == sorted(delivered)
    assert len(sim.bodies()) == 3
    name = "fg:idem:t:" + hashlib.sha256(b"render-7").hexdigest()
    client = redis.Redis.from_url(redis_server.url)
    try:
        stored = client.hget(name, "response")
        size = client.memory_usage(name)
    finally:
        client.close()
    assert stored is not None and b"b64_json" in stored
    assert sum(len(image) for image in images) > 3 * len(stored)
    assert size is not None and size < 2048
