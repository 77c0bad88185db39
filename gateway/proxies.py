"""The client address of a request (SPEC 8): the TCP peer, unless that peer is a trusted proxy.

Only a proxy listed in `server.trusted_proxies` may name the client in `X-Forwarded-For`;
anyone else could write any address there. Each proxy appends the address it received the
request from, so the header is read right to left, past every trusted hop, to the first
address no trusted proxy vouches for (as uvicorn's ProxyHeadersMiddleware does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def _host(hop: str) -> str:
    """A hop without its port: `1.2.3.4:5678` and `[2001:db8::1]:443` name a host too."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


class TrustedProxies:
    """The configured proxies, and the client address a request's headers and peer give."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in entries
        )

    def trusts(self, host: str) -> bool:
        ip = _ip(host)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The peer, or, when it is trusted, the rightmost `X-Forwarded-For` hop it does not
        vouch for (all trusted: the leftmost, the first proxy's own client)."""
        if peer is None or not forwarded_for or not self.trusts(peer):
            return peer
        hops = [_host(hop.strip()) for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop or peer
        return hops[0] or peer
