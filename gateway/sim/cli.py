"""`flux-gateway sim`: command-line options and the server runner for the simulator alone."""

from __future__ import annotations

import argparse

import uvicorn

from gateway.sim.app import create_sim_app
from gateway.sim.config import SimConfig

DEFAULT_PORT = 8090
BACKLOG = 4096
"""Like a real upstream, the simulator takes thousands of jobs arriving at once (bench.load)."""


def add_arguments(parser: argparse.ArgumentParser, *, listen: bool = True) -> None:
    """The `sim` options; `listen=False` leaves --host/--port to a parser that has them."""
    if listen:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind")
    parser.add_argument(
        "--keys", default="", help="comma-separated valid upstream keys (empty: any key)"
    )
    parser.add_argument(
        "--url-ttl", type=float, default=600.0, help="seconds a result link stays valid"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before an image is ready"
    )
    parser.add_argument(
        "--moderation-word", default="forbidden", help="prompts containing it are moderated"
    )
    parser.add_argument(
        "--credits", type=float, default=1000.0, help="initial BFL credits of every key"
    )
    parser.add_argument(
        "--max-active-per-key", type=int, default=24, help="BFL active-task cap per key"
    )
    parser.add_argument(
        "--result-kib",
        type=int,
        default=None,
        help="fast mode for benchmarks: every result is one incompressible PNG of this size",
    )


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """The SimConfig the options describe (--host/--port are the server's business)."""
    keys = [key.strip() for key in (ns.keys or "").split(",") if key.strip()]
    return SimConfig(
        keys=keys,
        url_ttl=ns.url_ttl,
        latency=ns.latency,
        moderation_word=ns.moderation_word,
        credits=ns.credits,
        max_active_per_key=getattr(ns, "max_active_per_key", 24),
        result_kib=getattr(ns, "result_kib", None),
    )


async def serve_sim(cfg: SimConfig, host: str, port: int) -> None:
    config = uvicorn.Config(
        create_sim_app(cfg), host, port, log_level="warning", ws="none", backlog=BACKLOG
    )
    await uvicorn.Server(config).serve()
