"""The `flux-gateway` command: serve, demo, sim, keys new, check-config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.errors import ConfigError
from gateway.keys import hash_key, new_client_key
from gateway.settings import Settings


def _load(path: str | None) -> Settings:
    try:
        return Settings.load(path)
    except ConfigError as exc:
        raise SystemExit(f"flux-gateway: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"flux-gateway: the configuration is invalid:\n{exc}") from None


def port_number(text: str) -> int:
    """A TCP port, refused by argparse otherwise (uvicorn would wrap 70000 round silently)."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import server

    settings = _load(args.config)
    if args.host:
        settings.server.host = args.host
    if args.port:
        settings.server.port = args.port
    server.serve(settings, args.config, workers=args.workers)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway import demo

    demo.run(args.host, args.port, args.data_dir, new_key=args.new_key, log_level=args.log_level)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.listen import ListenError, listen
    from gateway.sim.cli import config_from_args, serve_sim

    config = config_from_args(args)
    try:
        listen(args.host, args.port).close()
    except ListenError as exc:
        raise SystemExit(f"flux-gateway sim: {exc}") from None
    print(f"flux-gateway sim listening on http://{args.host}:{args.port}", flush=True)
    asyncio.run(serve_sim(config, args.host, args.port))
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    key = new_client_key()
    if args.admin:
        print("# admin key: for the admin API and the console's operator view; not stored")
        print(key)
        print("# put this line in the [admin] section (add to the list for several admins):")
    else:
        print(
            f"# client key for team {args.team!r}: give it to the team; it is not stored anywhere"
        )
        print(key)
        print(f"# put this line in the [[teams]] entry named {args.team!r}:")
    print(f'key_hashes = ["{hash_key(key)}"]')
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    # check-config builds the app but never serves: its metrics must not land in the files
    # of a running gateway's multiprocess folder, where /metrics would merge them.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from gateway.config_report import report
    from gateway.preflight import CannotStart, assemble

    settings = _load(args.config)
    text, warnings = report(settings)
    errors: list[str] = []
    try:
        assemble(settings)
    except CannotStart as refused:
        errors = refused.reasons
    print(text, flush=True)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if errors:
        print("flux-gateway serve would refuse to start on this config.", file=sys.stderr)
    return 2 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML config (default: $GATEWAY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=port_number)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="run the gateway wired to the built-in simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=port_number, default=8080)
    demo.add_argument(
        "--data-dir", default="./data/demo", help="where the demo keeps its images and keys"
    )
    demo.add_argument(
        "--new-key", action="store_true", help="make new client and admin keys (else kept)"
    )
    demo.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="info shows one JSON line per request",
    )
    demo.set_defaults(func=cmd_demo)

    sim = commands.add_parser("sim", help="run only the upstream simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=port_number, default=9090)
    from gateway.sim.cli import add_arguments

    add_arguments(sim, listen=False)
    sim.set_defaults(func=cmd_sim)

    keys = commands.add_parser("keys", help="client keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_commands.add_parser("new", help="make a client or admin key and its config hash")
    whose = new.add_mutually_exclusive_group(required=True)
    whose.add_argument("--team", help="a client key for this [[teams]] entry")
    whose.add_argument("--admin", action="store_true", help="an admin key for [admin]")
    new.set_defaults(func=cmd_keys_new)

    check = commands.add_parser(
        "check-config", help="validate a config and show what it resolves to"
    )
    check.add_argument("--config", help="TOML config (default: $GATEWAY_CONFIG)")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
