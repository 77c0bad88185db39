"""One pooled aiohttp session per purpose, made on first use inside the running loop.

aiohttp binds a session and its connector to the event loop that is running when they are
made, while the gateway's parts are built before uvicorn starts its loop; so each holder
keeps the options and makes the session on the first request.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class LazySession:
    def __init__(self, connector: dict[str, Any], **options: Any) -> None:
        self._connector = connector
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self._connector), **self._options
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
