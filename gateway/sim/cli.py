"""`flux-gateway sim`: command-line options and the server runner for the simulator alone."""

from __future__ import annotations

import argparse

import uvicorn
from pydantic import ValidationError

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
        "--credits",
        type=float,
        default=1000.0,
        help="initial credits of every account (BFL charges them; the aggregator needs > 0)",
    )
    parser.add_argument(
        "--max-active",
        type=int,
        default=24,
        help="BFL active-task cap per account (flux-kontext-max: at most 6)",
    )
    parser.add_argument(
        "--accounts",
        type=parse_accounts,
        default={},
        metavar="NAME=K1,K2;NAME=K3",
        help="BFL accounts and their keys, which share the cap and credits "
        "(a key listed nowhere is an account alone)",
    )
    parser.add_argument(
        "--poll-host",
        default="localhost",
        help="host BFL polling_urls name, with the submit's scheme and port, like BFL's "
        "regional hosts; empty: the submit host",
    )
    parser.add_argument(
        "--result-kib",
        type=int,
        default=None,
        help="fast mode for benchmarks: every result is one incompressible PNG of this size",
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_accounts(text: str) -> dict[str, list[str]]:
    """`"acct1=k1,k2;acct2=k3"` → {"acct1": ["k1", "k2"], "acct2": ["k3"]}."""
    accounts: dict[str, list[str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, keys = entry.partition("=")
        if not sep or not name.strip() or not _names(keys) or name.strip() in accounts:
            raise argparse.ArgumentTypeError("expected NAME=KEY,KEY;NAME=KEY with unique names")
        accounts[name.strip()] = _names(keys)
    return accounts


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """The SimConfig the options describe (--host/--port are the server's business).

    A contradiction between options exits with pydantic's messages only, which never quote keys.
    """
    try:
        return SimConfig(
            keys=_names(ns.keys or ""),
            url_ttl=ns.url_ttl,
            latency=ns.latency,
            moderation_word=ns.moderation_word,
            credits=ns.credits,
            max_active=ns.max_active,
            accounts=ns.accounts,
            poll_host=ns.poll_host or None,
            result_kib=ns.result_kib,
        )
    except ValidationError as invalid:
        problems = "; ".join(error["msg"] for error in invalid.errors(include_url=False))
        raise SystemExit(f"flux-gateway sim: {problems}") from None


async def serve_sim(cfg: SimConfig, host: str, port: int) -> None:
    config = uvicorn.Config(
        create_sim_app(cfg), host, port, log_level="warning", ws="none", backlog=BACKLOG
    )
    await uvicorn.Server(config).serve()
