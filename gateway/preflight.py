"""Whether `serve` can start on a config and environment: one answer for `serve` and
`check-config`, so the check never says yes where the server would refuse."""

from __future__ import annotations

from starlette.applications import Starlette

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.settings import Settings

DEMO_HINT = "To try the gateway without an upstream account, run: flux-gateway demo"


class CannotStart(Exception):
    """Every reason found why `serve` would refuse this config, each one line; `lacking`
    when upstreams, keys or teams are missing altogether (then the demo is the way to try it)."""

    def __init__(self, reasons: list[str], *, lacking: bool) -> None:
        super().__init__(reasons)
        self.reasons = reasons
        self.lacking = lacking

    def __str__(self) -> str:
        lines = ["flux-gateway serve: cannot start:", *(f"  - {r}" for r in self.reasons)]
        if self.lacking:
            lines.append(f"Pass --config FILE or set GATEWAY_CONFIG (see config/). {DEMO_HINT}")
        return "\n".join(lines)


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


def assemble(settings: Settings) -> Starlette:
    """The app `serve` runs; CannotStart if anything is missing or wrong.

    Building the app is the check: `create_app` validates the config eagerly (unset
    credential variables, a missing bucket, unknown models) without opening any client, so
    nothing here repeats those rules.
    """
    missing = missing_for_serve(settings)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        raise CannotStart([*missing, str(exc)], lacking=bool(missing)) from None
    if missing:
        raise CannotStart(missing, lacking=True)
    return app
