"""Proxies both ways: whose `X-Forwarded-For` names the client in the logs (`trusted_proxies`),
and whether outbound calls take the environment's proxy and `.netrc` (`trust_env`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from hashlib import sha256
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.cache.base import ImageMeta
from gateway.cache.filesystem import FilesystemCache
from gateway.cache.rehost import Rehoster
from gateway.metrics import Metrics
from gateway.middleware import RequestContext
from gateway.proxies import TrustedProxies
from gateway.settings import CacheSettings
from gateway.upstreams.transport import AiohttpTransport
from tests.conftest import CLIENT_KEY, gateway_settings, start_gateway
from tests.helpers import Sim, ThreadServer, captured_logs, image_bytes

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy")
BYPASS_VARIABLES = ("no_proxy", "NO_PROXY", "ALL_PROXY")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),
        ("127.0.0.1", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["203.0.113.9:5678"], "203.0.113.9"),
        ("127.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
        ("127.0.0.1", ["2001:db8::7"], "2001:db8::7"),
        ("127.0.0.1", ["10.0.0.2, 10.0.0.3"], "10.0.0.2"),
        ("127.0.0.1", [""], "127.0.0.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("::ffff:127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("192.0.2.50", ["203.0.113.9"], "192.0.2.50"),
        (None, ["203.0.113.9"], None),
    ],
)
def test_client_is_the_rightmost_hop_no_trusted_proxy_vouches_for(
    peer: str | None, forwarded: list[str], client: str | None
) -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client(peer, forwarded) == client


def test_no_trusted_proxies_means_the_peer_is_the_client() -> None:
    assert TrustedProxies([]).client("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _logged_client(trusted: list[str], headers: list[tuple[str, str]]) -> str | None:
    """The `client` of the access log line for one real request from 127.0.0.1."""
    app = RequestContext(Starlette(routes=[Route("/v1/ping", _ok)]), Metrics(), trusted)
    server = ThreadServer(app).start()
    with captured_logs() as logs:
        try:
            response = httpx.get(f"{server.url}/v1/ping", headers=headers)
        finally:
            server.stop()  # after the request's log line, which follows its response
    assert response.text == "ok"
    (line,) = [json.loads(text) for text in logs.lines if '"msg":"request"' in text]
    assert line["route"] == "/v1/ping"
    client = line["client"]
    assert client is None or isinstance(client, str)
    return client


FORWARDED = [("x-forwarded-for", "198.51.100.1, 203.0.113.9"), ("x-forwarded-for", "10.1.2.3")]


def test_access_log_takes_the_client_from_a_trusted_proxy() -> None:
    assert _logged_client(["127.0.0.0/8", "10.0.0.0/8"], FORWARDED) == "203.0.113.9"


def test_access_log_ignores_forwarded_for_from_an_untrusted_peer() -> None:
    assert _logged_client(["10.0.0.0/8"], FORWARDED) == "127.0.0.1"
    assert _logged_client([], FORWARDED) == "127.0.0.1"


def test_gateway_logs_the_forwarded_client_of_an_image_request(sim: Sim, tmp_path: Path) -> None:
    settings = gateway_settings(sim, tmp_path, server={"trusted_proxies": ["127.0.0.1"]})
    gw = start_gateway(settings)
    with captured_logs() as logs:
        try:
            response = httpx.post(
                f"{gw.url}/v1/images/generations",
                headers={
                    "authorization": f"Bearer {CLIENT_KEY}",
                    "x-forwarded-for": FORWARDED[0][1],
                },
                json={"model": "flux-2-pro", "prompt": "x"},
                timeout=60,
            )
        finally:
            gw.server.stop()
    assert response.status_code == 200
    (line,) = [json.loads(text) for text in logs.lines if '"msg":"request"' in text]
    assert (line["client"], line["team"], line["status"]) == ("203.0.113.9", "design", 200)


class Recorder:
    """A loopback HTTP/1.1 server that records each request head and answers `body`: a
    stand-in for an upstream, a result host or a forward proxy."""

    def __init__(self, body: bytes, content_type: str = "text/plain") -> None:
        self.body = body
        self.content_type = content_type
        self.heads: list[list[str]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Recorder:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head.split("\r\n")[:-2])
            writer.write(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\n"
                + f"content-type: {self.content_type}\r\n".encode()
                + f"content-length: {len(self.body)}\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    def request_lines(self) -> list[str]:
        return [head[0] for head in self.heads]

    def header(self, name: str) -> list[str | None]:
        prefix = f"{name.lower()}: "
        return [
            next((line[len(prefix) :] for line in head if line.lower().startswith(prefix)), None)
            for head in self.heads
        ]


@pytest.fixture
def proxy_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No proxy variables and no `.netrc` but those a test sets."""
    for name in (*PROXY_VARIABLES, *BYPASS_VARIABLES, "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    yield


def _use_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Recorder) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)


def _use_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Recorder, Recorder]]:
    """A target and a proxy that answer differently, so the body says which one was asked."""
    async with Recorder(b"direct") as target, Recorder(b"via proxy") as proxy:
        yield target, proxy


async def _upstream_call(trust_env: bool, url: str) -> str:
    transport = AiohttpTransport(trust_env=trust_env)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        return (await client.get(f"{url}/v1/images")).text


@pytest.mark.usefixtures("proxy_environment")
async def test_upstream_calls_ignore_proxy_variables_and_netrc_by_default(
    servers: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target, proxy = servers
    _use_proxy(monkeypatch, proxy)
    _use_netrc(monkeypatch, tmp_path)
    assert await _upstream_call(False, target.url) == "direct"
    assert (target.request_lines(), proxy.heads) == (["GET /v1/images HTTP/1.1"], [])
    assert target.header("authorization") == [None]


@pytest.mark.usefixtures("proxy_environment")
async def test_upstream_calls_take_the_environment_proxy_with_trust_env(
    servers: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, proxy = servers
    _use_proxy(monkeypatch, proxy)
    assert await _upstream_call(True, target.url) == "via proxy"
    assert (target.heads, proxy.request_lines()) == ([], [f"GET {target.url}/v1/images HTTP/1.1"])


@pytest.mark.usefixtures("proxy_environment")
async def test_upstream_calls_take_netrc_credentials_with_trust_env(
    servers: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target, _ = servers
    _use_netrc(monkeypatch, tmp_path)
    assert await _upstream_call(True, target.url) == "direct"
    assert target.header("authorization") == ["Basic bmV0cmMtdXNlcjpuZXRyYy1wYXNzd29yZA=="]


async def _rehosted(trust_env: bool, url: str, root: Path) -> str:
    """The sha256 of the image the cache stored."""
    settings = CacheSettings(dir=root, allowed_result_hosts=["127.0.0.1"], allow_http_results=True)
    rehoster = Rehoster(settings, FilesystemCache(root), Metrics(), trust_env=trust_env)
    try:
        image = await rehoster.rehost(url, ImageMeta("design", "flux-2-pro", "req_1", "agg"))
    finally:
        await rehoster.aclose()
    return image.sha256


@pytest.fixture
async def image_servers() -> AsyncIterator[tuple[Recorder, Recorder, bytes, bytes]]:
    direct, proxied = image_bytes("PNG", (10, 200, 10)), image_bytes("PNG", (10, 10, 200))
    async with Recorder(direct, "image/png") as target, Recorder(proxied, "image/png") as proxy:
        yield target, proxy, direct, proxied


@pytest.mark.usefixtures("proxy_environment")
async def test_result_downloads_follow_the_same_trust_env_rule(
    image_servers: tuple[Recorder, Recorder, bytes, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    target, proxy, direct, proxied = image_servers
    _use_proxy(monkeypatch, proxy)
    url = f"{target.url}/result.png"
    assert await _rehosted(False, url, tmp_path / "off") == sha256(direct).hexdigest()
    assert (target.request_lines(), proxy.heads) == (["GET /result.png HTTP/1.1"], [])
    assert await _rehosted(True, url, tmp_path / "on") == sha256(proxied).hexdigest()
    assert proxy.request_lines() == [f"GET {url} HTTP/1.1"]
    assert len(target.heads) == 1


@pytest.mark.usefixtures("proxy_environment")
async def test_gateway_calls_upstreams_and_downloads_directly_by_default(
    sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = start_gateway(gateway_settings(sim, tmp_path))
    try:
        async with Recorder(b"via proxy") as proxy:
            _use_proxy(monkeypatch, proxy)
            async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
                response = await client.post(
                    f"{gw.url}/v1/images/generations",
                    headers={"authorization": f"Bearer {CLIENT_KEY}"},
                    json={"model": "flux-2-pro", "prompt": "x"},
                )
    finally:
        gw.server.stop()
    assert (response.status_code, len(response.json()["data"])) == (200, 1)
    assert proxy.heads == []
    assert [r["path"] for r in sim.requests()] == ["/v1/images/generations"]
