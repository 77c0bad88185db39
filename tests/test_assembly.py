"""`create_app(settings)` as the one assembly point: checked eagerly, started in the lifespan."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.api.openapi import document
from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.settings import Settings
from tests.conftest import CLIENT_KEY, Gateway, gateway_settings
from tests.helpers import Sim

PACKAGE = Path(__file__).parent.parent / "gateway"
SUPERVISED = {"lease renewal", "key upkeep agg", "cache recount", "retention sweep"}


def test_the_openapi_document_is_built_from_settings_alone(gateway: Gateway) -> None:
    served = httpx.get(f"{gateway.url}/openapi.json")
    assert served.status_code == 200
    assert served.json() == document(gateway.settings)
    assert document(Settings())["servers"] == [{"url": "http://127.0.0.1:8080"}]


def _unknown_model(settings: Settings) -> None:
    settings.upstreams[0].models = ["flux-2-pro", "flux-9-nope"]


def _shared_key(settings: Settings) -> None:
    settings.teams[1].keys = [CLIENT_KEY]


def _bucketless(settings: Settings) -> None:
    settings.cache.backend = "s3"


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_unknown_model, "upstream 'agg': unknown models flux-9-nope"),
        (_shared_key, "a client key is listed for both 'design' and 'limited'"),
        (_bucketless, 'cache.backend = "s3" needs cache.bucket'),
    ],
)
def test_a_refused_config_fails_in_create_app_with_no_loop_running(
    sim: Sim, tmp_path: Path, spoil: object, message: str
) -> None:
    settings = gateway_settings(sim, tmp_path / "cache")
    assert callable(spoil)
    spoil(settings)
    with pytest.raises(ConfigError) as refused:
        create_app(settings)
    assert str(refused.value) == message


async def test_requests_are_served_from_the_parts_only_while_the_lifespan_runs(
    sim: Sim, tmp_path: Path
) -> None:
    settings = gateway_settings(sim, tmp_path / "cache")
    app = create_app(settings)
    assert not hasattr(app.state, "parts")
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        before = await client.get("/v1/models", headers=auth)
        assert before.status_code == 503
        assert before.json()["error"]["code"] == "not_started"
        async with app.router.lifespan_context(app):
            running = {t.get_name() for t in asyncio.all_tasks()}
            assert running >= SUPERVISED
            models = await client.get("/v1/models", headers=auth)
            assert models.status_code == 200
            assert models.json()["object"] == "list"
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert {t.get_name() for t in asyncio.all_tasks()} & SUPERVISED == set()
        after = await client.get("/healthz")
        assert after.status_code == 503


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_core_never_imports_the_console() -> None:
    mounts_console = {PACKAGE / "app.py", PACKAGE / "api" / "console.py"}
    core = [
        path
        for path in PACKAGE.rglob("*.py")
        if path not in mounts_console and PACKAGE / "console" not in path.parents
    ]
    assert len(core) > 50
    importers = {
        str(path.relative_to(PACKAGE))
        for path in core
        if any(name.startswith("gateway.console") for name in _imports(path))
    }
    assert importers == set()
