"""Every validation rule answers 400 with its `param` before any upstream request is made."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, LIMITED_KEY, Gateway
from tests.helpers import Sim, data_url, image_bytes

URL = "https://example.com/ref.png"
urls = [f"https://example.com/{i}.png" for i in range(9)]


def refs(n: int) -> dict[str, str]:
    keys = ["input_image"] + [f"input_image_{i}" for i in range(2, 9)]
    return {keys[i]: urls[i] for i in range(n)}


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown field",
        {"model": "flux-2-pro", "prompt": "x", "sede": 1},
        "sede",
        "unknown_parameter",
    ),
    ("missing prompt", {"model": "flux-2-pro"}, "prompt", "missing_required_parameter"),
    (
        "kontext takes one image on the aggregator",
        {"model": "flux-kontext-pro", "prompt": "x", **refs(2)},
        "input_image_2",
        "too_many_images",
    ),
    (
        "klein takes four",
        {"model": "flux-2-klein-9b", "prompt": "x", "image": urls[:5]},
        "input_image_5",
        "too_many_images",
    ),
    (
        "nine images",
        {"model": "flux-2-pro", "prompt": "x", "image": urls},
        "input_image_8",
        "invalid_value",
    ),
    (
        "steps on pro",
        {"model": "flux-2-pro", "prompt": "x", "steps": 20},
        "steps",
        "unsupported_parameter",
    ),
    (
        "guidance on kontext",
        {"model": "flux-kontext-max", "prompt": "x", "guidance": 3},
        "guidance",
        "unsupported_parameter",
    ),
    (
        "steps over 50",
        {"model": "flux-2-flex", "prompt": "x", "steps": 51},
        "steps",
        "invalid_value",
    ),
    (
        "guidance under 1.5",
        {"model": "flux-2-flex", "prompt": "x", "guidance": 1.0},
        "guidance",
        "invalid_value",
    ),
    (
        "safety over 6",
        {"model": "flux-2-pro", "prompt": "x", "safety_tolerance": 7},
        "safety_tolerance",
        "invalid_value",
    ),
    (
        "webp on the aggregator",
        {"model": "flux-2-pro", "prompt": "x", "output_format": "webp"},
        "output_format",
        "invalid_value",
    ),
    (
        "gif",
        {"model": "flux-2-pro", "prompt": "x", "output_format": "gif"},
        "output_format",
        "invalid_value",
    ),
    ("bad size", {"model": "flux-2-pro", "prompt": "x", "size": "big"}, "size", "invalid_value"),
    (
        "size and aspect_ratio",
        {"model": "flux-2-pro", "prompt": "x", "size": "1024x1024", "aspect_ratio": "1:1"},
        "aspect_ratio",
        "invalid_value",
    ),
    (
        "ratio too wide for FLUX.2",
        {"model": "flux-2-pro", "prompt": "x", "aspect_ratio": "5:1"},
        "aspect_ratio",
        "invalid_value",
    ),
    (
        "ratio too wide for Kontext",
        {"model": "flux-kontext-pro", "prompt": "x", "size": "3072x1024"},
        "size",
        "invalid_value",
    ),
    (
        "width without height",
        {"model": "flux-2-pro", "prompt": "x", "width": 1024},
        "height",
        "invalid_value",
    ),
    ("n over 10", {"model": "flux-2-pro", "prompt": "x", "n": 11}, "n", "invalid_value"),
    ("n zero", {"model": "flux-2-pro", "prompt": "x", "n": 0}, "n", "invalid_value"),
    (
        "native and openai references mixed",
        {"model": "flux-2-pro", "prompt": "x", "input_image": URL, "image": [URL]},
        "image",
        "ambiguous_reference_images",
    ),
    (
        "image and images",
        {"model": "flux-2-pro", "prompt": "x", "image": [URL], "images": [URL]},
        "images",
        "invalid_value",
    ),
    (
        "plain http reference",
        {"model": "flux-2-pro", "prompt": "x", "image": "http://example.com/a.png"},
        "image",
        "invalid_value",
    ),
    (
        "data URL that is not an image",
        {
            "model": "flux-2-pro",
            "prompt": "x",
            "input_image": "data:image/png;base64,aGVsbG8gd29ybGQ=",
        },
        "input_image",
        "invalid_value",
    ),
    (
        "data URL with the wrong type",
        {
            "model": "flux-2-pro",
            "prompt": "x",
            "input_image": data_url(image_bytes("JPEG"), "image/png"),
        },
        "input_image",
        "invalid_value",
    ),
    ("mask", {"model": "flux-2-pro", "prompt": "x", "mask": URL}, "mask", "unsupported_parameter"),
    (
        "stream",
        {"model": "flux-2-pro", "prompt": "x", "stream": True},
        "stream",
        "unsupported_parameter",
    ),
    (
        "response_format",
        {"model": "flux-2-pro", "prompt": "x", "response_format": "png"},
        "response_format",
        "invalid_value",
    ),
    (
        "quality the OpenAI API does not know",
        {"model": "flux-2-pro", "prompt": "x", "quality": "ultra"},
        "quality",
        "invalid_value",
    ),
    (
        "transparent background",
        {"model": "flux-2-pro", "prompt": "x", "background": "transparent"},
        "background",
        "unsupported_parameter",
    ),
    (
        "output_compression above 100",
        {"model": "flux-2-pro", "prompt": "x", "output_compression": 101},
        "output_compression",
        "invalid_value",
    ),
    (
        "partial images need streaming",
        {"model": "flux-2-pro", "prompt": "x", "partial_images": 2},
        "partial_images",
        "unsupported_parameter",
    ),
    (
        "moderation the OpenAI API does not know",
        {"model": "flux-2-pro", "prompt": "x", "moderation": "off"},
        "moderation",
        "invalid_value",
    ),
    (
        "no model and the team has no default",
        {"prompt": "x"},
        "model",
        "missing_required_parameter",
    ),
    (
        "prompt_upsampling as text",
        {"model": "flux-2-pro", "prompt": "x", "prompt_upsampling": "maybe"},
        "prompt_upsampling",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rejected_before_upstream(
    gateway: Gateway, sim: Sim, body: dict[str, Any], param: str, code: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json=body,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert response.headers["x-request-id"]
    assert sim.requests() == []


def test_sdk_raises_bad_request_with_param(client: openai.OpenAI, sim: Sim) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="flux-kontext-pro", prompt="x", extra_body=refs(2))
    assert caught.value.param == "input_image_2"
    assert caught.value.code == "too_many_images"
    assert sim.requests() == []


def test_unknown_model_is_404(client: openai.OpenAI, sim: Sim) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="dall-e-3", prompt="x")
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    assert sim.requests() == []


def test_model_not_allowed_for_team(gateway: Gateway, sim: Sim) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway.client(LIMITED_KEY).images.generate(model="flux-2-max", prompt="x")
    assert (caught.value.code, caught.value.param) == ("model_not_allowed", "model")
    assert caught.value.body["type"] == "permission_error"  # type: ignore[index]
    assert sim.requests() == []


@pytest.mark.parametrize("header", [None, "Bearer sk-wrong", "Basic abc"])
def test_missing_or_wrong_key_is_401(gateway: Gateway, sim: Sim, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers=headers,
        json={"model": "flux-2-pro", "prompt": "x"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["x-request-id"]
    assert sim.requests() == []


def test_malformed_json_is_400(gateway: Gateway, sim: Sim) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
        content=b'{"model": "flux-2-pro", "prompt": ',
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert sim.requests() == []


def test_unknown_route_is_404_envelope(gateway: Gateway) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/nothing", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Unknown route: GET /v1/nothing",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
