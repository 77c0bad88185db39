"""A hostile or dead upstream: no upstream key ever reaches a client, and a dead upstream costs
one connect attempt per request, not one per key."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.keys import hash_key
from tests.conftest import Gateway, gateway_settings, sim_upstream, start_gateway
from tests.helpers import LogLines, Sim, ThreadServer, captured_logs

ADMIN_KEY = "sk-admin-hostile-0123456789"
AGG_KEY = "sk-live-Zq8v1Rk3Tn5Wm7Yp9Bx2"
BFL_KEY = "3f1c9a2e-7b4d-4e8a-9c61-0d5e2b7a8f34"
ECHO_STATUSES = (400, 403, 404, 413, 422)
LOG_WAIT_S = 10.0
ADMIN_VIEWS = ("/admin/errors", "/admin/upstreams", "/metrics")
ECHO_SAID = (
    " (upstream said: your key [redacted] is invalid; also tried [redacted] and [redacted])."
)
ECHO_MESSAGES = {
    400: "The upstream refused the request",
    403: "The request was rejected by the upstream's content moderation",
    404: "The upstream refused the request",
    413: "The upstream refused the request as too large",
    422: "The upstream refused the request",
}


def _echo(status: int, key: str) -> dict[str, Any]:
    text = f"your key {key} is invalid; also tried sk-other-9f8e7d6c5b4a and Bearer {key}"
    return {"error": {"message": text, "type": "invalid_request_error", "param": None}}


async def _aggregator(request: Request) -> JSONResponse:
    key = request.headers["authorization"].removeprefix("Bearer ")
    status: int = request.app.state.status
    return JSONResponse(_echo(status, key), status)


async def _bfl_submit(request: Request) -> JSONResponse:
    key = request.headers["x-key"]
    detail = [{"loc": ["body", "prompt"], "msg": f"bad prompt for key {key}", "type": "value"}]
    return JSONResponse({"detail": detail}, 422)


@pytest.fixture
def hostile() -> Iterator[ThreadServer]:
    app = Starlette(
        routes=[
            Route("/v1/images/generations", _aggregator, methods=["POST"]),
            Route("/v1/{model}", _bfl_submit, methods=["POST"]),
        ]
    )
    app.state.status = 400
    server = ThreadServer(app).start()
    yield server
    server.stop()


def request_line(logs: LogLines, response: httpx.Response) -> str:
    """The request's own log line, written just after its answer was sent."""
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + LOG_WAIT_S
    while not any(request_id in line for line in logs.lines):
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.01)
    return next(line for line in logs.lines if request_id in line)


def post_and_scan(gw: Gateway) -> httpx.Response:
    """One request, then the answer, its log lines, the admin output and the metrics scanned
    for every secret the hostile upstream echoed."""
    with captured_logs() as logs:
        response = gw.post()
        request_line(logs, response)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    seen = [response.text, "\n".join(logs.lines)]
    seen += [httpx.get(f"{gw.url}{path}", headers=admin).text for path in ADMIN_VIEWS]
    for text in seen:
        assert_no_secret(text)
    return response


def assert_no_secret(text: str) -> None:
    for secret in (AGG_KEY, BFL_KEY, "sk-other-9f8e7d6c5b4a", AGG_KEY[:16]):
        assert secret not in text


@pytest.mark.parametrize("status", ECHO_STATUSES)
def test_an_aggregator_echoing_the_key_never_shows_it(
    hostile: ThreadServer, sim: Sim, tmp_path: Path, status: int
) -> None:
    hostile.server.config.app.state.status = status
    upstream = {
        "name": "echo",
        "kind": "openai-images",
        "base_url": f"{hostile.url}/v1",
        "keys": [AGG_KEY],
        "models": ["flux-2-pro"],
    }
    settings = gateway_settings(sim, tmp_path, upstreams=[upstream])
    settings.admin.key_hashes = [hash_key(ADMIN_KEY)]
    gw = start_gateway(settings)
    try:
        response = post_and_scan(gw)
        assert response.status_code == (413 if status == 413 else 400)
        assert response.json()["error"]["message"] == ECHO_MESSAGES[status] + ECHO_SAID
    finally:
        gw.server.stop()


def test_bfl_detail_echoing_the_key_never_shows_it(
    hostile: ThreadServer, sim: Sim, tmp_path: Path
) -> None:
    upstream = {
        "name": "bfl",
        "kind": "bfl",
        "base_url": hostile.url,
        "keys": [BFL_KEY],
        "models": ["flux-2-pro"],
    }
    settings = gateway_settings(sim, tmp_path, upstreams=[upstream])
    settings.admin.key_hashes = [hash_key(ADMIN_KEY)]
    gw = start_gateway(settings)
    try:
        response = post_and_scan(gw)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "prompt"
        assert error["message"] == (
            "The upstream refused the request (upstream said: prompt: bad prompt for key "
            "[redacted])."
        )
    finally:
        gw.server.stop()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback port that never completes a connection: its accept queue is full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/v1"
    for filler in fillers:
        filler.close()
    listener.close()


def unreachable_count(gw: Gateway) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    pattern = r'^gateway_upstream_errors_total\{kind="unreachable",upstream="dead"\} (\S+)$'
    found = re.findall(pattern, text, re.MULTILINE)
    return float(found[0]) if found else 0.0


def test_a_dead_upstream_costs_one_connect_attempt_and_is_passed_over(
    black_hole: str, sim: Sim, tmp_path: Path
) -> None:
    dead = {
        "name": "dead",
        "kind": "openai-images",
        "base_url": black_hole,
        "keys": [f"sk-dead-key-{i}" for i in range(5)],
        "models": ["flux-2-pro"],
        "priority": 1,
        "connect_timeout_s": 0.5,
    }
    settings = gateway_settings(
        sim, tmp_path, upstreams=[dead, sim_upstream(sim, "agg", "openai-images", priority=2)]
    )
    settings.admin.key_hashes = [hash_key(ADMIN_KEY)]
    gw = start_gateway(settings)
    try:
        first = gw.post()
        assert first.status_code == 200, first.text
        assert first.headers["x-gateway-upstream"] == "agg"
        assert unreachable_count(gw) == 1
        second = gw.post()
        assert second.headers["x-gateway-upstream"] == "agg"
        assert unreachable_count(gw) == 1  # passed over: no second connect attempt
        upstreams = httpx.get(
            f"{gw.url}/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ).json()["data"]
        (info,) = [u for u in upstreams if u["name"] == "dead"]
        assert info["passed_over_reason"] == "dead: cannot connect (ConnectTimeout)"
        assert info["passed_over_until"] is not None
    finally:
        gw.server.stop()


def test_when_every_upstream_is_dead_the_answer_says_why(
    black_hole: str, sim: Sim, tmp_path: Path
) -> None:
    dead = {
        "name": "dead",
        "kind": "openai-images",
        "base_url": black_hole,
        "keys": ["sk-dead-key-a", "sk-dead-key-b"],
        "models": ["flux-2-pro"],
        "connect_timeout_s": 0.5,
    }
    gw = start_gateway(gateway_settings(sim, tmp_path, upstreams=[dead]))
    try:
        response = gw.post()
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "upstream_unavailable"
        assert "dead: cannot connect (ConnectTimeout)" in error["message"]
        assert response.headers["retry-after"]
        assert unreachable_count(gw) == 1
    finally:
        gw.server.stop()
