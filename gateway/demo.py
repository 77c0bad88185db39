"""`flux-gateway demo`: the gateway and the simulator in one process, ready for an OpenAI SDK."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.catalog import MODELS
from gateway.keys import new_client_key
from gateway.logs import configure
from gateway.server import uvicorn_config
from gateway.settings import Settings
from gateway.sim import SimConfig, create_sim_app


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def demo_settings(host: str, port: int, sim_port: int, data_dir: str, client_key: str) -> Settings:
    return Settings(
        server={"host": host, "port": port},
        cache={
            "dir": str(Path(data_dir) / "images"),
            "allowed_result_hosts": [host],
            "allow_http_results": True,
        },
        upstreams=[
            {
                "name": "simulator",
                "kind": "openai-images",
                "base_url": f"http://{host}:{sim_port}/v1",
                "keys": ["sim-key-1", "sim-key-2"],
                "models": list(MODELS),
            }
        ],
        teams=[{"name": "demo", "keys": [client_key]}],
    )


def banner(base_url: str, client_key: str) -> str:
    return f"""flux-gateway demo: gateway on {base_url}, wired to the built-in FLUX simulator.

OPENAI_BASE_URL={base_url}/v1
OPENAI_API_KEY={client_key}

Export those two lines, then any OpenAI SDK app works unchanged, for example:

python3 - <<'PY'
from openai import OpenAI
r = OpenAI().images.generate(model="flux-2-pro", prompt="a lighthouse", size="1536x1024")
print(r.data[0].url)
PY

or with curl:

  curl -s {base_url}/v1/images/generations -H "Authorization: Bearer {client_key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"model": "flux-2-pro", "prompt": "a lighthouse at dusk"}}'

Web console: {base_url}/console (sign in with the OPENAI_API_KEY above).

Press Ctrl+C to stop."""


async def _serve(host: str, port: int, data_dir: str) -> None:
    sim_port = _free_port(host)
    client_key = new_client_key()
    settings = demo_settings(host, port, sim_port, data_dir, client_key)
    configure("warning", "json")
    sim = uvicorn.Server(
        uvicorn.Config(
            create_sim_app(SimConfig(keys=["sim-key-1", "sim-key-2"])),
            host=host,
            port=sim_port,
            log_config=None,
            access_log=False,
        )
    )
    gateway = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    sim_task = asyncio.create_task(sim.serve())
    gateway_task = asyncio.create_task(gateway.serve())
    while not (sim.started and gateway.started):
        if gateway_task.done() or sim_task.done():
            break
        await asyncio.sleep(0.05)
    if gateway.started:
        print(banner(settings.server.base_url, client_key), flush=True)
    await gateway_task
    sim.should_exit = True
    await sim_task


def run(host: str, port: int, data_dir: str) -> None:
    asyncio.run(_serve(host, port, data_dir))
