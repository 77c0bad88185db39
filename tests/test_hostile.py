"""Hostile input: oversized, malformed and lying bodies are refused before any upstream call."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIENT_KEY, Gateway, gateway_settings, start_gateway
from tests.helpers import Sim, image_bytes

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def edits(gw: Gateway, headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Response:
    return httpx.post(  # type: ignore[arg-type]
        f"{gw.url}/v1/images/edits", headers={**AUTH, **(headers or {})}, timeout=60, **kwargs
    )


def test_body_over_the_cap_by_content_length_is_413(gateway: Gateway, sim: Sim) -> None:
    cap = int(gateway.settings.server.max_body_mb * 1024 * 1024)
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={**AUTH, "content-type": "application/json"},
        content=b" " * (cap + 1),
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert sim.requests() == []


def test_streamed_body_over_the_cap_is_413(gateway: Gateway, sim: Sim) -> None:
    cap = int(gateway.settings.server.max_body_mb * 1024 * 1024)
    chunk = b" " * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(cap // len(chunk) + 2):
            yield chunk

    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={**AUTH, "content-type": "application/json"},
        content=body(),
        timeout=60,
    )
    assert response.status_code == 413
    assert sim.requests() == []


@pytest.mark.parametrize(
    "raw",
    [
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nflux-2-pro\r\n--xyz',
        b"not multipart at all",
        b"--xyz\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n--xyz--\r\n",
    ],
)
def test_malformed_multipart_is_400(gateway: Gateway, sim: Sim, raw: bytes) -> None:
    response = edits(gateway, {"content-type": "multipart/form-data; boundary=xyz"}, content=raw)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert sim.requests() == []


def test_too_many_form_parts_is_400(gateway: Gateway, sim: Sim) -> None:
    files = [("image[]", ("a.png", image_bytes("PNG"), "image/png")) for _ in range(40)]
    response = edits(gateway, data={"model": "flux-2-pro", "prompt": "x"}, files=files)
    assert response.status_code == 400
    assert sim.requests() == []


def test_data_url_over_the_reference_cap_is_400(gateway: Gateway, sim: Sim) -> None:
    payload = base64.b64encode(image_bytes("PNG") + b"\0" * (21 * 1024 * 1024)).decode()
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers=AUTH,
        json={
            "model": "flux-2-pro",
            "prompt": "x",
            "input_image": f"data:image/png;base64,{payload}",
        },
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_image"
    assert "larger than 20 MB" in response.json()["error"]["message"]
    assert sim.requests() == []


@pytest.mark.parametrize(
    "value",
    [
        "data:image/png;base64,!!!!",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "data:text/html;base64,PGgxPmhpPC9oMT4=",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
    ],
)
def test_lying_references_are_400(gateway: Gateway, sim: Sim, value: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers=AUTH,
        json={"model": "flux-2-pro", "prompt": "x", "input_image": value},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_image"
    assert sim.requests() == []


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'"text"', b'{"model": 1, "prompt": []}', b"\xff\xfe"]
)
def test_json_of_the_wrong_shape_is_400(gateway: Gateway, sim: Sim, body: bytes) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={**AUTH, "content-type": "application/json"},
        content=body,
        timeout=60,
    )
    assert response.status_code == 400
    assert sim.requests() == []


def test_body_that_never_finishes_is_408(sim: Sim, tmp_path: Path) -> None:
    settings = gateway_settings(sim, tmp_path / "cache")
    settings.server.body_timeout_s = 0.5
    gw = start_gateway(settings)
    port = int(gw.url.rsplit(":", 1)[1])
    try:
        answer = _stalled_request(port)
    finally:
        gw.server.stop()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in answer
    assert sim.requests() == []


def _stalled_request(port: int) -> bytes:
    """Headers and a few body bytes of a request promising 1000, then silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {CLIENT_KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
        answer = b""
        while chunk := sock.recv(65536):  # the 408 closes the connection: read until it does
            answer += chunk
        return answer
