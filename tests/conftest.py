from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from gateway.app import create_app
from gateway.catalog import MODELS
from gateway.settings import Settings
from gateway.sim import SimConfig, create_sim_app
from tests.helpers import Sim, ThreadServer, free_port

CLIENT_KEY = "sk-test-design-0123456789"
LIMITED_KEY = "sk-test-limited-0123456789"
SIM_KEYS = ["sim-key-a", "sim-key-b"]


@dataclass
class Gateway:
    url: str
    settings: Settings
    server: ThreadServer

    def client(self, key: str = CLIENT_KEY, retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=retries)


@pytest.fixture(scope="session")
def sim() -> Iterator[Sim]:
    server = ThreadServer(create_sim_app(SimConfig(keys=SIM_KEYS))).start()
    yield Sim(server.url, SIM_KEYS)
    server.stop()


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
