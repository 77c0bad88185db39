"""The official OpenAI Node SDK (npm `openai`, tests/node) against the gateway, end to end.

Each scenario of tests/node/images.mjs runs in a real `node` process; the assertions are on
the exact JSON the upstream (the simulator) received and on the bytes the client got back.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, Gateway
from tests.helpers import Sim, data_url, image_bytes
from tests.system_tools import require

NODE_DIR = Path(__file__).parent / "node"
NODE_TIMEOUT_S = 60
NPM_TIMEOUT_S = 300

PNG = image_bytes("PNG", (250, 0, 0))
JPEG = image_bytes("JPEG", (0, 250, 0))
WEBP = image_bytes("WEBP", (0, 0, 250))


RunNode = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """tests/node with its node_modules, installed from the lockfile once if missing."""
    require("node")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        npm = require("npm")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR)],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci --prefix tests/node failed:\n{done.stdout}\n{done.stderr}")
    return NODE_DIR


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("node-images")
    paths: dict[str, str] = {}
    for var, name, data in [
        ("IMAGE_PNG", "a.png", PNG),
        ("IMAGE_JPEG", "b.jpg", JPEG),
        ("IMAGE_WEBP", "c.webp", WEBP),
    ]:
        (folder / name).write_bytes(data)
        paths[var] = str(folder / name)
    return paths


@pytest.fixture
def run_node(node_sdk: Path, gateway: Gateway, image_files: dict[str, str]) -> RunNode:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env = {
        **base,
        **image_files,
        "OPENAI_BASE_URL": f"{gateway.url}/v1",
        "OPENAI_API_KEY": CLIENT_KEY,
    }

    node = require("node")

    def run(scenario: str) -> dict[str, Any]:
        done = subprocess.run(
            [node, str(node_sdk / "images.mjs"), scenario],
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            env=env,
        )
        assert done.returncode == 0, f"node exited {done.returncode}:\n{done.stderr}"
        return dict(json.loads(done.stdout))

    return run


def upstream_bytes(sim: Sim) -> bytes:
    (produced,) = sim.results()
    return httpx.get(f"{sim.url}/_sim/results/{produced['id']}").content


def test_generate_with_native_fields(run_node: RunNode, sim: Sim) -> None:
    result = run_node("generate")
    assert sim.bodies() == [
        {
            "model": "flux-2-pro",
            "prompt": "a lighthouse at dusk",
            "input_image": "https://example.com/a.png",
            "input_image_2": "https://example.com/b.png",
            "aspect_ratio": "3:2",
            "seed": 42,
            "output_format": "png",
        }
    ]
    assert type(sim.bodies()[0]["seed"]) is int
    assert isinstance(result["created"], int)
    (item,) = result["data"]
    assert httpx.get(item["url"]).content == upstream_bytes(sim)


@pytest.mark.parametrize("scenario", ["edit", "edit-octet"])
def test_edit_files_in_order_as_sniffed_data_urls(
    run_node: RunNode, sim: Sim, scenario: str
) -> None:
    result = run_node(scenario)
    assert sim.bodies() == [
        {
            "model": "flux-2-pro",
            "prompt": "combine the three",
            "input_image": data_url(PNG, "image/png"),
            "input_image_2": data_url(JPEG, "image/jpeg"),
            "input_image_3": data_url(WEBP, "image/webp"),
            "seed": 7,
        }
    ]
    assert type(sim.bodies()[0]["seed"]) is int
    (item,) = result["data"]
    assert httpx.get(item["url"]).content == upstream_bytes(sim)


def test_b64_json_response(run_node: RunNode, sim: Sim) -> None:
    result = run_node("b64")
    assert sim.bodies() == [{"model": "flux-2-pro", "prompt": "inline please"}]
    (item,) = result["data"]
    assert "url" not in item
    assert base64.b64decode(item["b64_json"]) == upstream_bytes(sim)


def test_unsupported_field_is_a_400_before_any_upstream_call(run_node: RunNode, sim: Sim) -> None:
    error = run_node("bad")["error"]
    assert (error["status"], error["param"]) == (400, "steps")
    assert error["type"] == "invalid_request_error"
    assert sim.requests() == []
