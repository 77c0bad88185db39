"""Where the shared state lives, read from `state.redis_url`: one Redis, Sentinel or Cluster.

One setting names all three, told apart by the scheme, so a deployment moves between them by
changing one line:

- `redis://`, `rediss://`, `unix://`: one Redis server (redis-py's own URL form);
- `redis+sentinel://[user:password@]host:port,host:port/master-name[/db]`: the master that
  the sentinels name, followed through failovers (`?sentinel_password=` when the sentinels
  themselves ask for one; port 26379 when left out);
- `redis+cluster://[user:password@]host:port,host:port`: a Redis Cluster reached through any of
  its nodes (a managed service's configuration endpoint is one such node; port 6379 when left
  out; cluster mode has database 0 only).

`rediss+sentinel://` and `rediss+cluster://` speak TLS. Errors name the part that is wrong and
never echo the URL, which may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

from gateway.errors import ConfigError

Kind = Literal["single", "sentinel", "cluster"]
SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORTS: dict[Kind, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True)
class Topology:
    kind: Kind
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False

    def describe(self) -> dict[str, object]:
        """What check-config shows: the shape, never a password."""
        if self.kind == "single":
            return {"kind": "single"}
        shown: dict[str, object] = {
            "kind": self.kind,
            "nodes": [f"{host}:{port}" for host, port in self.hosts],
            "tls": self.tls,
        }
        if self.kind == "sentinel":
            shown |= {"master": self.master, "db": self.db}
        return shown


def parse_topology(url: str) -> Topology:
    """The topology `url` names; ConfigError for a malformed Sentinel or Cluster URL."""
    scheme, _, rest = url.partition("://")
    known = SCHEMES.get(scheme.lower())
    if known is None:
        return Topology("single", url)
    kind, tls = known
    netloc, _, tail = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _userinfo(userinfo) if at else (None, None)
    hosts = tuple(_host(part, DEFAULT_PORTS[kind]) for part in hostlist.split(","))
    path, _, query = tail.partition("?")
    options = dict(parse_qsl(query))
    segments = [s for s in path.split("/") if s]
    master, db = "", 0
    if kind == "sentinel":
        if not segments:
            raise ConfigError("state.redis_url: a redis+sentinel:// URL names the master after /")
        master = unquote(segments[0])
        db = _db(segments[1:])
    elif _db(segments) != 0:
        raise ConfigError("state.redis_url: Redis Cluster has database 0 only")
    return Topology(
        kind,
        url,
        hosts,
        master,
        db,
        username,
        password,
        options.get("sentinel_password") or None,
        tls,
    )


def checked_topology(url: str, prefix: str) -> Topology:
    """`parse_topology`, and a key prefix that cannot split one owner's keys over slots."""
    topology = parse_topology(url)
    if topology.kind == "cluster" and ("{" in prefix or "}" in prefix):
        raise ConfigError("state.key_prefix: no braces on a Redis Cluster (they pick slots)")
    return topology


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon else None


def _host(part: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    if part.startswith("["):
        host, _, after = part[1:].partition("]")
        port = after.removeprefix(":")
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ConfigError("state.redis_url: a node without a host name")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"state.redis_url: {host}: the port is not a number from 1 to 65535")
    return host, int(port)


def _db(segments: list[str]) -> int:
    if not segments:
        return 0
    if len(segments) > 1 or not segments[0].isdigit():
        raise ConfigError("state.redis_url: the database is one number, after the last /")
    return int(segments[0])
