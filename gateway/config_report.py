"""What a config resolves to, with every secret shown only as a fingerprint or `***`."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from gateway.keys import fingerprint
from gateway.settings import Settings
from gateway.state.topology import parse_topology

MASK = "***"
SECRET_WORDS = ("password", "secret", "token", "credential")
"""A setting whose name holds one of these is a secret, unless it names a variable (`…_env`)."""


def report(settings: Settings) -> tuple[str, list[str]]:
    """(the resolved settings as JSON with secrets masked, warnings)."""
    warnings: list[str] = []
    data: dict[str, Any] = settings.model_dump(mode="json")
    for upstream, raw in zip(settings.upstreams, data["upstreams"], strict=True):
        raw["keys"] = [f"fp:{fingerprint(k)}" for k in upstream.resolved_keys()]
    for team, raw in zip(settings.teams, data["teams"], strict=True):
        if team.keys:
            warnings.append(
                f"team {team.name!r} lists plaintext keys: use key_hashes in production"
            )
        raw["keys"] = [f"fp:{fingerprint(k)}" for k in team.keys]
    if settings.state.backend == "redis":
        data["state"]["redis_topology"] = parse_topology(settings.state.redis_url).describe()
    masked = _masked(data)
    return orjson.dumps(masked, option=orjson.OPT_INDENT_2).decode(), warnings


def _masked(value: Any, name: str = "") -> Any:
    """Secret-named settings become `***`; a password inside any URL does too."""
    if isinstance(value, dict):
        return {key: _masked(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, name) for item in value]
    if not isinstance(value, str) or not value:
        return value
    if _is_secret(name):
        return MASK
    return masked_url(value) if "://" in value else value


def masked_url(url: str) -> str:
    """`redis://user:pw@host/0?password=pw` → `redis://user:***@host/0?password=***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_is_secret(key) for key, _ in pairs):
        query = urlencode([(k, MASK if _is_secret(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return not lowered.endswith("_env") and any(word in lowered for word in SECRET_WORDS)
