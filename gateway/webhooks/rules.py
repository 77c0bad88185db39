"""Which `webhook_url`s a team may use: SPEC 4.6's rules, checked before any money is spent.

A webhook makes the gateway send a request wherever the client says, so the URL is held to the
team's own `webhook_hosts`, https unless `jobs.allow_http_webhooks`, and public addresses (or
ones the team lists literally). `check_webhook_url` checks what the URL says; `resolve_check`
also what its host resolves to now. Each delivery attempt checks again: the rules here, and the
addresses in the connector's resolver (`sender.py`), on exactly the answers it connects to.
"""

from __future__ import annotations

import asyncio
import fnmatch
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from gateway.cache import addresses
from gateway.errors import InvalidRequest
from gateway.settings import JobsSettings, TeamSettings

MAX_URL_CHARS = 2048
PARAM = "webhook_url"


def refuse(reason: str) -> InvalidRequest:
    return InvalidRequest(f"webhook_url is refused: {reason}.", param=PARAM)


def webhook_host(url: str) -> str:
    """The URL's host as rules and logs name it (never its path or query, which may be secret)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def listed_literals(team: TeamSettings) -> frozenset[addresses.Address]:
    """The addresses the team lists as such: the only non-public ones its webhooks may reach."""
    return addresses.literals(team.webhook_hosts)


def check_webhook_url(team: TeamSettings, url: str, jobs: JobsSettings) -> None:
    """InvalidRequest (param `webhook_url`) unless the team may send its webhooks to `url`."""
    if team.webhook_secret() is None:
        raise refuse("the team has no webhook secret (webhook_secret_env) to sign webhooks with")
    if len(url) > MAX_URL_CHARS:
        raise refuse(f"it is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise refuse("it is not a valid URL") from None
    if parts.scheme != "https" and not (jobs.allow_http_webhooks and parts.scheme == "http"):
        raise refuse("it must be an https URL")
    host = parts.hostname or ""
    if not host:
        raise refuse("it names no host")
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in team.webhook_hosts):
        raise refuse(f"host {host!r} is not in the team's webhook_hosts")
    literal = addresses.parse(host)
    if literal is not None:
        check_addresses(team, host, [literal])


def check_addresses(team: TeamSettings, host: str, found: Iterable[addresses.Address]) -> None:
    """Refuse a host that resolves to a loopback, private or link-local (any non-public)
    address the team does not list literally."""
    listed = listed_literals(team)
    inside = sorted({str(a) for a in found if not addresses.permitted(a, listed)})
    if inside:
        raise refuse(
            f"host {host!r} resolves to a non-public address ({', '.join(inside)}) that "
            "webhook_hosts does not list literally"
        )


async def resolve_check(team: TeamSettings, url: str, jobs: JobsSettings) -> None:
    """`check_webhook_url`, then the addresses the host resolves to now, all of them."""
    check_webhook_url(team, url, jobs)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if addresses.parse(host) is not None:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise refuse(f"host {host!r} does not resolve") from None
    found = [a for *_, sockaddr in answers if (a := addresses.parse(str(sockaddr[0])))]
    check_addresses(team, host, found)
