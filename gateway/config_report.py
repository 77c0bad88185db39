"""What a config resolves to, with every secret shown only as a fingerprint."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.catalog import MODELS
from gateway.keys import fingerprint
from gateway.settings import Settings


def report(settings: Settings) -> tuple[str, list[str], list[str]]:
    """(the resolved settings as JSON with secrets masked, errors, warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    data: dict[str, Any] = settings.model_dump(mode="json")
    for upstream, raw in zip(settings.upstreams, data["upstreams"], strict=True):
        raw["keys"] = [f"fp:{fingerprint(k)}" for k in upstream.resolved_keys()]
        unknown = [m for m in upstream.models if m not in MODELS]
        if unknown:
            problems.append(f"upstream {upstream.name!r}: unknown models {', '.join(unknown)}")
    for team, raw in zip(settings.teams, data["teams"], strict=True):
        if team.keys:
            warnings.append(
                f"team {team.name!r} lists plaintext keys: use key_hashes in production"
            )
        raw["keys"] = [f"fp:{fingerprint(k)}" for k in team.keys]
    if data["server"].get("metrics_token"):
        data["server"]["metrics_token"] = "***"
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), problems, warnings
