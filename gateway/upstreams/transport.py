"""The network under each upstream's `httpx.AsyncClient`: one pooled aiohttp session.

httpx's own pool (httpcore) looks at every pooled connection, with a readability syscall
each, whenever a request starts or ends, so its cost per request grows with the number of
jobs in flight; at a few thousand held connections it no longer keeps up (bench/load.py and
the profile in the README). aiohttp's connector hands out an idle connection in constant
time and parses with its C parser. The upstream code keeps speaking httpx; only the
transport changes.

Failures are mapped onto httpx's exceptions with one rule that matters for billing: only a
failure to connect means the job was certainly not sent (`ConnectError`, `ConnectTimeout`).
Everything after the connection exists is a read-side error, because the upstream may have
accepted and charged the job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

from gateway.http_session import LazySession

READ_BUFFER = 256 * 1024


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


KEEPALIVE_S = 4.0
"""Idle upstream connections are dropped before common servers drop them (uvicorn 5 s, nginx
75 s): a job sent on a connection the server is closing fails after it left, and such a job
is never sent again (it may have been charged), so the race must not happen. A connection
in use is reused at once, so under load this costs nothing."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one pooled aiohttp session.

    `trust_env` (`server.trust_env`, the same rule as result downloads) lets proxy variables
    and `.netrc` apply to these calls, which carry upstream keys; off, they go direct.
    """

    def __init__(self, keepalive_s: float = KEEPALIVE_S, *, trust_env: bool = False) -> None:
        self._session = LazySession(
            connector={"limit": 0, "keepalive_timeout": keepalive_s},
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
            trust_env=trust_env,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        # A body given as pieces (a big upstream body, `Upstream.post_json`) is sent as it
        # comes rather than joined into one more copy first.
        streamed = not isinstance(request.stream, httpx.ByteStream)
        body = request.stream if streamed else await request.aread() or None
        with _as_httpx_errors(request):
            response = await self._session.get().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        await self._session.aclose()
