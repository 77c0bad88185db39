"""Which addresses a result download may connect to: public ones, and others listed literally.

A host allowed by name (`*.example.com`, or `localhost`) can resolve to 127.0.0.1, 10.x or
169.254.169.254 and make the gateway fetch from its own network. So the addresses themselves are
checked, in the connector's resolver, on exactly the answers it is about to connect to: a DNS
answer that changes after the name check cannot slip past. A non-public address is used only if
`allowed_result_hosts` names it literally (the simulator's `127.0.0.1`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse(text: str) -> Address | None:
    """An IP address written as a host (`10.0.0.1`, `::1`, `[::1]`, `fe80::1%eth0`), or None."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def is_public(address: Address) -> bool:
    """Reachable on the internet: not loopback, private, link-local, shared, reserved,
    unspecified or multicast. An IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64)
    is judged by the IPv4 address too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not address.is_multicast


def literals(hosts: Iterable[str]) -> frozenset[Address]:
    """The addresses that `allowed_result_hosts` lists as such."""
    return frozenset(a for host in hosts if (a := parse(host)) is not None)


def permitted(address: Address, listed: frozenset[Address]) -> bool:
    return is_public(address) or address in listed


class RefusedAddress(OSError):
    """Every address a result host resolved to is non-public and not listed."""


class GuardedResolver(AbstractResolver):
    """The default resolver, keeping only the addresses a download may connect to."""

    def __init__(self, listed: frozenset[Address], setting: str = "allowed_result_hosts") -> None:
        self.listed = listed
        self.setting = setting
        self._inner: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        answers = await self._inner.resolve(host, port, family)
        kept = [r for r in answers if self._permitted(r["host"])]
        if not kept:
            found = ", ".join(sorted({r["host"] for r in answers}))
            raise RefusedAddress(
                f"host {host!r} resolves only to non-public addresses ({found}) that "
                f"{self.setting} does not list"
            )
        return kept

    def _permitted(self, host: str) -> bool:
        address = parse(host)
        return address is not None and permitted(address, self.listed)

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
