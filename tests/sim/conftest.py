"""A real simulator on a free port for the whole session; state is reset before each test.

Tests that need another configuration start their own with `running_sim`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn

from gateway.sim import SimConfig, create_sim_app

KEYS = ["k1", "k2", "k3", "sk-quota-1", "sk-noperm-1"]


@asynccontextmanager
async def running_sim(config: SimConfig) -> AsyncIterator[str]:
    """A simulator with `config` on 127.0.0.1 and a free port; yields its base URL."""
    app = create_sim_app(config)
    server_config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(server_config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("simulator exited before starting")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def sim_url() -> AsyncIterator[str]:
    async with running_sim(SimConfig(keys=KEYS, credits=100.0)) as url:
        yield url


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as client:
        (await client.post("/_sim/reset")).raise_for_status()
        yield client
