"""What a config must get right before anything starts: checked without opening a client.

`create_app` runs `validate` eagerly, so `check-config` and `serve` refuse the same configs
at the same moment, while the live parts (pools, clients, tasks) are built only in the
lifespan.
"""

from __future__ import annotations

from gateway.catalog import MODELS
from gateway.errors import ConfigError
from gateway.keys import KeyRing, hash_key
from gateway.settings import CacheSettings, Settings, TeamSettings
from gateway.upstreams import KINDS


def validate(settings: Settings) -> None:
    """ConfigError for the first thing that would stop the gateway from being built."""
    client_keys(settings.teams)
    _check_cache(settings.cache)
    for upstream in settings.upstreams:
        if upstream.kind not in KINDS:
            raise ConfigError(f"upstream {upstream.name!r}: unknown kind {upstream.kind!r}")
        unknown = [m for m in upstream.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"upstream {upstream.name!r}: unknown models {', '.join(unknown)}")


def _check_cache(settings: CacheSettings) -> None:
    if settings.backend == "s3":
        if not settings.bucket:
            raise ConfigError('cache.backend = "s3" needs cache.bucket')
        settings.s3_credentials()


def client_keys(teams: list[TeamSettings]) -> KeyRing:
    """Client key hashes → team names; one key listed for two teams is refused."""
    owners: dict[str, str] = {}
    for team in teams:
        for h in team.key_hashes + [hash_key(k) for k in team.keys]:
            if h in owners and owners[h] != team.name:
                raise ConfigError(
                    f"a client key is listed for both {owners[h]!r} and {team.name!r}"
                )
            owners[h] = team.name
    return KeyRing(owners)
