"""One webhook attempt: a POST that follows no redirect, to a checked address, within a timeout.

Each team has its own connector, whose resolver keeps only the addresses that team may reach
(public ones, and those its `webhook_hosts` lists literally), so the address connected to is
the address checked. Nothing is pooled or cached between attempts: every attempt resolves and
checks again, so a DNS change cannot turn a webhook into a request to the inside. Proxy
variables are not taken: a proxy would resolve the host itself, past the check.
"""

from __future__ import annotations

import aiohttp

from gateway.cache import addresses
from gateway.http_session import LazySession
from gateway.settings import TeamSettings
from gateway.webhooks.rules import listed_literals


class Refused(Exception):
    """The host resolved only to addresses the team may not reach: never sent, never retried."""


class Unanswered(Exception):
    """No answer within the timeout, or no connection: retried."""


class WebhookSender:
    def __init__(self, teams: list[TeamSettings], timeout_s: float) -> None:
        self._sessions = {
            team.name: LazySession(
                connector={
                    "force_close": True,
                    "use_dns_cache": False,
                    "resolver": addresses.GuardedResolver(
                        listed_literals(team), setting="webhook_hosts"
                    ),
                },
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                trust_env=False,
            )
            for team in teams
        }

    async def post(self, team: str, url: str, headers: dict[str, str], body: bytes) -> int:
        """The answer's status (a redirect is a status like any other, not followed)."""
        try:
            session = self._sessions[team].get()
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                return response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, addresses.RefusedAddress):
                raise Refused(str(exc.os_error)) from exc
            raise Unanswered(f"no connection ({type(exc).__name__})") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unanswered(f"no answer ({type(exc).__name__})") from exc

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.aclose()
