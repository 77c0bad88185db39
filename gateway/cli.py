"""The `flux-gateway` command: serve, demo, sim, keys new, check-config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.errors import ConfigError
from gateway.keys import hash_key, new_client_key
from gateway.settings import Settings

DEMO_HINT = "To try the gateway without an upstream account, run: flux-gateway demo"


def _load(path: str | None) -> Settings:
    try:
        return Settings.load(path)
    except ConfigError as exc:
        raise SystemExit(f"flux-gateway: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"flux-gateway: the configuration is invalid:\n{exc}") from None


def missing_for_serve(settings: Settings) -> list[str]:
    """What a config lacks before `serve` can do anything useful and safe."""
    missing = []
    if not settings.upstreams:
        missing.append("no [[upstreams]] are configured")
    for upstream in settings.upstreams:
        if not upstream.resolved_keys():
            where = f"the environment variable {upstream.keys_env}" if upstream.keys_env else "keys"
            missing.append(f"upstream {upstream.name!r} has no keys (set {where})")
    if not any(team.key_hashes or team.keys for team in settings.teams):
        missing.append(
            "no [[teams]] with key_hashes are configured "
            "(make one: flux-gateway keys new --team NAME)"
        )
    return missing


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import server

    settings = _load(args.config)
    if args.host:
        settings.server.host = args.host
    if args.port:
        settings.server.port = args.port
    missing = missing_for_serve(settings)
    if missing:
        print("flux-gateway serve: cannot start:", file=sys.stderr)
        for line in missing:
            print(f"  - {line}", file=sys.stderr)
        print(
            f"Pass --config FILE or set GATEWAY_CONFIG (see config/). {DEMO_HINT}", file=sys.stderr
        )
        return 2
    server.serve(settings, args.config, workers=args.workers)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway import demo

    demo.run(args.host, args.port, args.data_dir)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.sim.cli import config_from_args, serve_sim

    print(f"flux-gateway sim listening on http://{args.host}:{args.port}", flush=True)
    asyncio.run(serve_sim(config_from_args(args), args.host, args.port))
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    key = new_client_key()
    print(f"# client key for team {args.team!r}: give it to the team; it is not stored anywhere")
    print(key)
    print(f"# put this line in the [[teams]] entry named {args.team!r}:")
    print(f'key_hashes = ["{hash_key(key)}"]')
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config_report import report

    settings = _load(args.config)
    text, problems, warnings = report(settings)
    print(text)
    for warning in warnings + missing_for_serve(settings):
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flux-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML config (default: $GATEWAY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="run the gateway wired to the built-in simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--data-dir", default="./data/demo", help="where demo images are kept")
    demo.set_defaults(func=cmd_demo)

    sim = commands.add_parser("sim", help="run only the upstream simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9090)
    from gateway.sim.cli import add_arguments

    add_arguments(sim, listen=False)
    sim.set_defaults(func=cmd_sim)

    keys = commands.add_parser("keys", help="client keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_commands.add_parser("new", help="make a client key and its config hash")
    new.add_argument("--team", required=True)
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
