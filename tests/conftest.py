from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.catalog import MODELS
from gateway.settings import Settings
from gateway.sim import SimConfig, create_sim_app
from tests.helpers import RedisServer, Sim, ThreadServer, free_port
from tests.redis_topologies import redis_cluster, redis_sentinel  # noqa: F401 (fixtures)

CLIENT_KEY = "sk-test-design-0123456789"
LIMITED_KEY = "sk-test-limited-0123456789"
SIM_KEYS = ["sim-key-a", "sim-key-b"]
SIM_POLL_HOST = "localhost"
UpstreamConfig = dict[str, Any]


@dataclass
class Gateway:
    url: str
    settings: Settings
    server: ThreadServer

    def client(self, key: str = CLIENT_KEY, retries: int = 0) -> openai.OpenAI:
        """An SDK client, closed with its connections when the test ends."""
        sdk = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=retries)
        OPEN_CLIENTS.append(sdk)
        return sdk

    def post(self, key: str = CLIENT_KEY, **body: Any) -> httpx.Response:
        """A raw generation request (flux-2-pro, prompt "x" unless overridden)."""
        return httpx.post(
            f"{self.url}/v1/images/generations",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "flux-2-pro", "prompt": "x", **body},
            timeout=60,
        )


@pytest.fixture(scope="session")
def sim() -> Iterator[Sim]:
    server = ThreadServer(create_sim_app(SimConfig(keys=SIM_KEYS))).start()
    sim = Sim(server.url, SIM_KEYS)
    yield sim
    sim.close()
    server.stop()


OPEN_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture(autouse=True)
def _fresh_sim(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").reset()


def gateway_settings(sim: Sim, cache_dir: Path, **overrides: object) -> Settings:
    data: dict[str, object] = {
        "cache": {
            "dir": str(cache_dir),
            "allowed_result_hosts": ["127.0.0.1"],
            "allow_http_results": True,
        },
        "upstreams": [
            {
                "name": "agg",
                "kind": "openai-images",
                "base_url": f"{sim.url}/v1",
                "keys": sim.keys,
                "models": list(MODELS),
                "timeout_s": 30,
            }
        ],
        "teams": [
            {"name": "design", "keys": [CLIENT_KEY]},
            {"name": "limited", "keys": [LIMITED_KEY], "models": ["flux-2-pro"]},
        ],
    }
    data.update(overrides)
    return Settings(**data)


def start_gateway(settings: Settings) -> Gateway:
    port = free_port()
    settings.server.port = port
    server = ThreadServer(create_app(settings), port).start()
    return Gateway(server.url, settings, server)


@pytest.fixture(scope="session")
def gateway(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(gateway_settings(sim, tmp_path_factory.mktemp("cache")))
    yield gw
    gw.server.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def sim_upstream(sim: Sim, name: str, kind: str, **fields: Any) -> UpstreamConfig:
    """An upstream of `kind` on the simulator, which serves both protocols on one port."""
    base_url = f"{sim.url}/v1" if kind == "openai-images" else sim.url
    config: UpstreamConfig = {"name": name, "kind": kind, "base_url": base_url}
    if kind == "bfl":
        # The simulator answers polling URLs on "localhost", as BFL names regional hosts.
        config["poll_hosts"] = [SIM_POLL_HOST]
    return config | {"keys": list(sim.keys), "models": list(MODELS), "timeout_s": 30} | fields


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def fresh_gateway(sim: Sim, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Gateways of a test's own: the default aggregator with other `keys` and settings, or
    exactly the given `upstreams`. All are stopped at the end of the test."""
    started: list[Gateway] = []

    def make(
        keys: list[str] | None = None,
        *,
        upstreams: list[UpstreamConfig] | None = None,
        cache: dict[str, Any] | None = None,
        **upstream: Any,
    ) -> Gateway:
        cache_dir = tmp_path / f"cache{len(started)}"
        if upstreams is not None:
            settings = gateway_settings(sim, cache_dir, upstreams=upstreams)
        else:
            settings = gateway_settings(sim, cache_dir)
            settings.upstreams[0].keys = keys if keys is not None else list(sim.keys)
            for name, value in upstream.items():
                setattr(settings.upstreams[0], name, value)
        for name, value in (cache or {}).items():
            setattr(settings.cache, name, value)
        gw = start_gateway(settings)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.server.stop()


Launch = Callable[[Settings], Gateway]


@pytest.fixture(params=["memory", "redis"])
def launch(request: pytest.FixtureRequest) -> Iterator[Launch]:
    """Start gateways on each state backend (Redis flushed once per test); stop them after."""
    started: list[Gateway] = []

    def start(settings: Settings) -> Gateway:
        if request.param == "redis":
            redis: RedisServer = request.getfixturevalue("redis_server")
            if not started:
                redis.flush()
            settings.state.backend = "redis"
            settings.state.redis_url = redis.url
        gw = start_gateway(settings)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.server.stop()
