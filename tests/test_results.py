"""Durable links: exact bytes after the upstream link died and after a restart; HTTP semantics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import openai
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.api.files import LINK_METHODS, ImageLane
from gateway.api.responses import error_response
from gateway.errors import GatewayError, NotFound, ServerError
from tests.conftest import CLIENT_KEY, Gateway, gateway_settings
from tests.helpers import Sim, data_url, free_port, gateway_process, write_config


def upstream_bytes(sim: Sim) -> list[bytes]:
    """What the upstream produced: every result it handed out, fetched from its own store."""
    return [httpx.get(f"{sim.url}/_sim/results/{r['id']}").content for r in sim.results()]


def test_link_outlives_the_upstream_link(client: openai.OpenAI, sim: Sim) -> None:
    sim.faults(result_url_ttl=0.5)
    result = client.images.generate(model="flux-2-pro", prompt="ephemeral", extra_body={"seed": 1})
    (produced,) = sim.results()
    upstream_link = produced["url"]
    sim.wait_expired(produced)
    assert httpx.get(upstream_link).status_code == 403
    served = httpx.get(result.data[0].url)
    assert served.status_code == 200
    assert served.content == upstream_bytes(sim)[0]
    assert served.headers["content-type"] == "image/jpeg"


def test_link_http_semantics(client: openai.OpenAI, sim: Sim) -> None:
    url = (
        client.images.generate(
            model="flux-2-pro", prompt="headers", extra_body={"output_format": "png"}
        )
        .data[0]
        .url
    )
    assert url is not None and url.endswith(".png")
    full = httpx.get(url)
    assert full.status_code == 200
    assert full.headers["content-type"] == "image/png"
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert full.headers["etag"] == f'"{hashlib.sha256(full.content).hexdigest()}"'
    assert full.content == upstream_bytes(sim)[0]
    part = httpx.get(url, headers={"range": "bytes=0-7"})
    assert part.status_code == 206
    assert part.content == b"\x89PNG\r\n\x1a\n"
    assert part.headers["content-range"] == f"bytes 0-7/{len(full.content)}"
    assert httpx.get(url, headers={"if-none-match": full.headers["etag"]}).status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e%2fsecret.png",
        "/images/../pyproject.toml",
        "/images/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png",
        "/images/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png",
        "/images/..",
        "/images/.json",
        "/images/%00.png",
    ],
)
def test_unknown_or_hostile_links_are_404(gateway: Gateway, path: str) -> None:
    response = httpx.get(f"{gateway.url}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    message = error.pop("message")
    assert error == {"type": "invalid_request_error", "param": None, "code": "not_found"}
    # A well-formed link name is answered by the link lane, anything else by the router.
    assert message == "No such image." or message.startswith("Unknown route: GET ")


def test_stored_metadata_file_is_not_served(client: openai.OpenAI, gateway: Gateway) -> None:
    url = client.images.generate(model="flux-2-pro", prompt="meta").data[0].url
    assert url is not None
    image_id = url.rsplit("/", 1)[1].split(".")[0]
    for name in (f"{image_id}.json", image_id, f"{image_id}.webp"):
        assert httpx.get(f"{gateway.url}/images/{name}").status_code == 404


def test_own_link_as_input_is_sent_as_data_url(client: openai.OpenAI, sim: Sim) -> None:
    first = client.images.generate(
        model="flux-2-pro", prompt="base", extra_body={"output_format": "png"}
    )
    link = first.data[0].url
    original = httpx.get(link).content
    client.images.generate(
        model="flux-kontext-pro", prompt="make it blue", extra_body={"input_image": link}
    )
    assert sim.bodies()[1] == {
        "model": "flux-kontext-pro",
        "prompt": "make it blue",
        "input_image": data_url(original, "image/png"),
    }


def test_unknown_own_link_as_input_is_400(
    gateway: Gateway, client: openai.OpenAI, sim: Sim
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(
            model="flux-2-pro",
            prompt="x",
            extra_body={
                "input_image": f"{gateway.url}/images/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png"
            },
        )
    assert caught.value.param == "input_image"
    assert sim.requests() == []


def test_link_survives_a_restart(sim: Sim, tmp_path: Path) -> None:
    port = free_port()
    settings = gateway_settings(sim, tmp_path / "cache")
    upstream = settings.upstreams[0]
    config = write_config(
        tmp_path / "gateway.toml",
        f"""
[server]
port = {port}
public_base_url = "http://127.0.0.1:{port}"

[cache]
dir = "{tmp_path / "cache"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true

[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{upstream.base_url}"
keys_env = "TEST_AGG_KEYS"
models = ["flux-2-pro"]

[[teams]]
name = "design"
key_hashes = ["{__import__("gateway.keys").keys.hash_key(CLIENT_KEY)}"]
""",
    )
    env = {"TEST_AGG_KEYS": ",".join(sim.keys)}
    with gateway_process(config, port, env):
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_KEY, max_retries=0
        )
        url = client.images.generate(model="flux-2-pro", prompt="persist").data[0].url
        before = httpx.get(url).content
    with pytest.raises(httpx.TransportError):
        httpx.get(url)
    with gateway_process(config, port, env):
        after = httpx.get(url)
    assert after.status_code == 200
    assert after.content == before == upstream_bytes(sim)[0]


async def test_the_link_lane_renders_errors_with_the_apps_handlers_and_never_runs_twice() -> None:
    """A link's error is answered by the handler of its nearest class, once; the rest of the
    app (the API middleware and router) is never reached for a link."""
    calls: list[str] = []

    async def failing(request: Request) -> Response:
        calls.append(request.path_params["name"])
        if request.path_params["name"].startswith("gone"):
            raise NotFound("No such image.")
        raise RuntimeError("disk on fire")

    async def rest(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a link went past the lane")

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error_response(ServerError(f"unexpected {type(exc).__name__}"))

    lane = ImageLane(
        rest,
        Route("/images/{name}", failing, methods=list(LINK_METHODS)),
        {GatewayError: gateway_error, Exception: unexpected},
    )
    transport = httpx.ASGITransport(app=lane)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        gone = await http.get("/images/gone.png")
        broken = await http.head("/images/broken.png")
    assert (gone.status_code, gone.json()) == (
        404,
        {
            "error": {
                "message": "No such image.",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        },
    )
    assert broken.status_code == 500
    assert calls == ["gone.png", "broken.png"]
