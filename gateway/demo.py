"""`flux-gateway demo`: the gateway and the simulator in one process, ready for an OpenAI SDK."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.catalog import MODELS
from gateway.demo_banner import banner
from gateway.demo_keys import DemoKeys, KeyFileError, kept_keys
from gateway.keys import hash_key
from gateway.listen import ListenError, listen
from gateway.logs import configure
from gateway.server import uvicorn_config
from gateway.settings import Settings
from gateway.sim import SimConfig, create_sim_app

SIM_KEYS = ["sim-key-1", "sim-key-2"]


def demo_settings(host: str, port: int, sim_port: int, data_dir: Path, keys: DemoKeys) -> Settings:
    return Settings(
        server={"host": host, "port": port},
        cache={
            "dir": str(data_dir / "images"),
            "allowed_result_hosts": [host],
            "allow_http_results": True,
        },
        upstreams=[
            {
                "name": "simulator",
                "kind": "openai-images",
                "base_url": f"http://{host}:{sim_port}/v1",
                "keys": SIM_KEYS,
                "models": list(MODELS),
            }
        ],
        teams=[{"name": "demo", "key_hashes": [hash_key(keys.client)]}],
        admin={"key_hashes": [hash_key(keys.admin)]},
    )


async def _serve(
    settings: Settings, front: socket.socket, back: socket.socket, keys: DemoKeys, key_file: Path
) -> None:
    sim_url = f"http://{settings.server.host}:{back.getsockname()[1]}"
    sim = uvicorn.Server(
        uvicorn.Config(create_sim_app(SimConfig(keys=SIM_KEYS)), log_config=None, access_log=False)
    )
    gateway = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    sim_task = asyncio.create_task(sim.serve(sockets=[back]))
    gateway_task = asyncio.create_task(gateway.serve(sockets=[front]))
    while not (sim.started and gateway.started):
        if gateway_task.done() or sim_task.done():
            break
        await asyncio.sleep(0.05)
    if gateway.started:
        print(banner(settings.server.base_url, keys, key_file, sim_url), flush=True)
    await gateway_task
    sim.should_exit = True
    await sim_task


def run(host: str, port: int, data_dir: str, *, new_key: bool, log_level: str) -> None:
    """Bind both ports and read the keys first, so each start-up failure is one line."""
    folder = Path(data_dir)
    try:
        keys, key_file = kept_keys(folder, renew=new_key)
    except KeyFileError as exc:
        raise SystemExit(f"flux-gateway demo: {exc}") from None
    try:
        front = listen(host, port)
    except ListenError as exc:
        raise SystemExit(f"flux-gateway demo: {exc}") from None
    try:
        back = listen(host, 0)
    except ListenError as exc:
        front.close()
        raise SystemExit(f"flux-gateway demo: the simulator: {exc}") from None
    settings = demo_settings(host, front.getsockname()[1], back.getsockname()[1], folder, keys)
    configure(log_level, "json")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a demo ends
        asyncio.run(_serve(settings, front, back, keys, key_file))
