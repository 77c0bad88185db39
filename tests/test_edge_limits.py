"""Memory and connections before any limit applies: what is refused before a body is read,
the gateway-wide body budget, capped request heads and the deadline to send one.

The attacks are sent over raw sockets so a test controls exactly how much of a request has
left the client when the answer comes back.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.app import create_app
from gateway.server import uvicorn_config
from tests.conftest import CLIENT_KEY, Launch, gateway_settings
from tests.helpers import Sim, ThreadServer, free_port

SAFETY_TIMEOUT_S = 30.0
HUGE = 90_000_000
TIGHT_KEY = "sk-test-tight-0123456789"


@contextmanager
def edge_gateway(sim: Sim, tmp_path: Path, **server: Any) -> Iterator[int]:
    """A gateway served as `flux-gateway serve` serves it (its connection protocol); its port."""
    settings = gateway_settings(sim, tmp_path / "cache")
    settings.server.port = free_port()
    settings.server.drain_s = 1
    for name, value in server.items():
        setattr(settings.server, name, value)
    app = create_app(settings)
    thread = ThreadServer(app, settings.server.port)
    thread.server = uvicorn.Server(uvicorn_config(app, settings, lifespan="on"))
    thread.start()
    try:
        yield settings.server.port
    finally:
        thread.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT_S)
    sock.settimeout(SAFETY_TIMEOUT_S)
    return sock


def head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def image_head(key: str, length: int | None, **extra: str) -> bytes:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json", **extra}
    if length is not None:
        headers["content-length"] = str(length)
    return head("/v1/images/generations", headers)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the next answer on `sock` (a Content-Length one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the answer's body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection; only a safety timeout makes it False."""
    try:
        while sock.recv(65536):
            continue
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_wrong_key_is_refused_before_the_body_is_sent(sim: Sim, tmp_path: Path) -> None:
    with edge_gateway(sim, tmp_path) as port, connect(port) as sock:
        sock.sendall(image_head("sk-wrong-0123456789", HUGE) + b'{"prompt": "' + b"a" * 65536)
        status, headers, body = answer(sock)
        assert status == 401
        assert headers["connection"] == "close"
        assert error_of(body) == {
            "message": "Incorrect API key provided.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
        assert closed_by_server(sock)
    assert sim.bodies() == []


def tight_team(**limits: int) -> list[dict[str, Any]]:
    return [{"name": "tight", "keys": [TIGHT_KEY], **limits}]


def test_a_team_at_its_rpm_is_refused_before_the_body_is_sent(
    sim: Sim, tmp_path: Path, launch: Launch
) -> None:
    gw = launch(gateway_settings(sim, tmp_path / "cache", teams=tight_team(rpm=1)))
    assert gw.post(key=TIGHT_KEY).status_code == 200
    port = int(gw.url.rsplit(":", 1)[1])
    with connect(port) as sock:
        sock.sendall(image_head(TIGHT_KEY, HUGE) + b'{"prompt": "' + b"a" * 65536)
        status, headers, body = answer(sock)
        assert closed_by_server(sock)
    assert status == 429
    error = error_of(body)
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for your team's requests per minute;")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["connection"] == "close"
    by_admission = gw.post(key=TIGHT_KEY)  # a small body: read, then refused by admission
    assert by_admission.status_code == 429
    assert error_of(by_admission.content) | {"message": ""} == error | {"message": ""}
    for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"):
        assert by_admission.headers[name] == headers[name]
    assert len(sim.bodies()) == 1


def test_a_team_at_its_concurrency_is_refused_before_the_body_is_sent(
    sim: Sim, tmp_path: Path, launch: Launch
) -> None:
    gw = launch(gateway_settings(sim, tmp_path / "cache", teams=tight_team(max_concurrency=1)))
    sim.faults(hang=True)
    port = int(gw.url.rsplit(":", 1)[1])
    small = b'{"model": "flux-2-pro", "prompt": "held"}'
    with connect(port) as held, connect(port) as sock:
        held.sendall(image_head(TIGHT_KEY, len(small)) + small)
        wait_for_jobs(sim, 1)
        sock.sendall(image_head(TIGHT_KEY, HUGE) + b'{"prompt": "' + b"a" * 65536)
        status, headers, body = answer(sock)
        assert closed_by_server(sock)
    assert status == 429
    error = error_of(body)
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"] == (
        "Rate limit reached for your team's requests in flight; retry after 1.0s."
    )
    assert headers["retry-after"] == "1"
    assert len(sim.bodies()) == 1


def wait_for_jobs(sim: Sim, count: int) -> None:
    """Until the simulator holds `count` jobs: those requests have passed admission."""
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while len(sim.bodies()) < count:
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.02)


BUDGET = {"max_body_mb": 1, "max_inflight_body_mb": 1}
HELD = 1_000_000


def padded(size: int) -> bytes:
    """A valid generation body of exactly `size` bytes (JSON allows trailing spaces)."""
    body = b'{"model": "flux-2-pro", "prompt": "x"}'
    return body + b" " * (size - len(body))


def hold_budget(sock: socket.socket) -> None:
    """Declare a body of HELD bytes and wait until the gateway starts reading it: the
    `100 Continue` it then sends proves the body's share of the budget was taken."""
    sock.sendall(image_head(CLIENT_KEY, HELD, expect="100-continue"))
    assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")


def test_a_body_past_the_gateway_wide_budget_is_503_until_another_ends(
    sim: Sim, tmp_path: Path
) -> None:
    with edge_gateway(sim, tmp_path, **BUDGET) as port, connect(port) as first:
        hold_budget(first)
        with connect(port) as second:
            second.sendall(image_head(CLIENT_KEY, 100_000) + padded(100_000)[:1000])
            status, headers, body = answer(second)
            assert closed_by_server(second)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert error_of(body) == {
            "message": "The gateway is receiving too many request bodies at once; "
            "retry the request.",
            "type": "server_error",
            "param": None,
            "code": "server_busy",
        }
        first.sendall(padded(HELD))
        assert answer(first)[0] == 200
        with connect(port) as again:
            again.sendall(image_head(CLIENT_KEY, 100_000) + padded(100_000))
            assert answer(again)[0] == 200


def test_a_streamed_body_is_counted_against_the_budget_as_it_arrives(
    sim: Sim, tmp_path: Path
) -> None:
    with edge_gateway(sim, tmp_path, **BUDGET) as port, connect(port) as first:
        hold_budget(first)
        with connect(port) as second:
            chunk = padded(100_000)
            second.sendall(
                image_head(CLIENT_KEY, None, **{"transfer-encoding": "chunked"})
                + f"{len(chunk):x}\r\n".encode()
                + chunk
                + b"\r\n"
            )
            status, headers, body = answer(second)
            assert closed_by_server(second)
        first.sendall(padded(HELD))
        assert answer(first)[0] == 200
    assert status == 503
    assert headers["retry-after"] == "1"
    assert error_of(body)["code"] == "server_busy"
    assert len(sim.bodies()) == 1


def models_head(**extra: str) -> bytes:
    return head("/v1/models", {"authorization": f"Bearer {CLIENT_KEY}", **extra}, method="GET")


@pytest.mark.parametrize(
    ("request_head", "message"),
    [
        (
            models_head(**{f"x-field-{i}": "v" for i in range(100)}),
            "The request has more than 100 header fields.",
        ),
        (models_head(**{"x-pad": "a" * 65536}), "The request headers are larger than 64 KiB."),
    ],
    ids=["too-many-fields", "too-large"],
)
def test_an_oversized_request_head_is_431_and_closed(
    sim: Sim, tmp_path: Path, request_head: bytes, message: str
) -> None:
    with edge_gateway(sim, tmp_path) as port, connect(port) as sock:
        sock.sendall(request_head)
        status, headers, body = answer(sock)
        assert closed_by_server(sock)
    assert status == 431
    assert headers["connection"] == "close"
    assert headers["x-request-id"].startswith("req_")
    assert error_of(body) == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "request_header_fields_too_large",
    }


def test_a_head_within_the_limits_is_served(sim: Sim, tmp_path: Path) -> None:
    fields = {f"x-field-{i}": "v" * 500 for i in range(98)}
    with edge_gateway(sim, tmp_path) as port, connect(port) as sock:
        sock.sendall(models_head(**fields))
        assert answer(sock)[0] == 200


def test_a_head_sent_too_slowly_is_408_and_closed(sim: Sim, tmp_path: Path) -> None:
    with edge_gateway(sim, tmp_path, header_timeout_s=0.2) as port, connect(port) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nhost: 127.0.0.1\r\nx-dr")
        status, headers, body = answer(sock)
        assert closed_by_server(sock)
    assert status == 408
    assert error_of(body) == {
        "message": "The request headers did not arrive within 0.2 s.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_timeout",
    }


def test_a_connection_that_sends_nothing_is_closed(sim: Sim, tmp_path: Path) -> None:
    with edge_gateway(sim, tmp_path, header_timeout_s=0.2) as port, connect(port) as sock:
        assert closed_by_server(sock)


def test_requests_longer_than_the_head_deadline_are_answered_on_one_connection(
    sim: Sim, tmp_path: Path
) -> None:
    sim.faults(latency=1.5)
    body = padded(100)
    with edge_gateway(sim, tmp_path, header_timeout_s=1) as port, connect(port) as sock:
        for _ in range(2):
            sock.sendall(image_head(CLIENT_KEY, len(body)) + body)
            assert answer(sock)[0] == 200


def test_a_body_sent_too_slowly_is_408_and_closed(sim: Sim, tmp_path: Path) -> None:
    with edge_gateway(sim, tmp_path, body_timeout_s=0.2) as port, connect(port) as sock:
        sock.sendall(image_head(CLIENT_KEY, 1000) + padded(1000)[:100])
        status, headers, body = answer(sock)
        assert closed_by_server(sock)
    assert status == 408
    assert headers["connection"] == "close"
    assert error_of(body)["code"] == "request_timeout"
