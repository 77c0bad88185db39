"""`images.edit` as the SDK sends it: multipart files in order, as data URLs of the sniffed type."""

from __future__ import annotations

import httpx
import openai

from tests.conftest import CLIENT_KEY, Gateway
from tests.helpers import Sim, data_url, image_bytes

PNG = image_bytes("PNG", (250, 0, 0))
JPEG = image_bytes("JPEG", (0, 250, 0))
WEBP = image_bytes("WEBP", (0, 0, 250))


def test_files_arrive_in_order_as_typed_data_urls(client: openai.OpenAI, sim: Sim) -> None:
    client.images.edit(model="flux-2-pro", prompt="combine", image=[PNG, JPEG, WEBP])
    request = sim.requests()[0]
    assert request["path"] == "/v1/images/generations"
    assert request["json"] == {
        "model": "flux-2-pro",
        "prompt": "combine",
        "input_image": data_url(PNG, "image/png"),
        "input_image_2": data_url(JPEG, "image/jpeg"),
        "input_image_3": data_url(WEBP, "image/webp"),
    }


def test_single_file_part_named_image(client: openai.OpenAI, sim: Sim) -> None:
    client.images.edit(
        model="flux-kontext-pro", prompt="sketch", image=("photo.jpg", JPEG, "image/jpeg")
    )
    assert sim.bodies() == [
        {
            "model": "flux-kontext-pro",
            "prompt": "sketch",
            "input_image": data_url(JPEG, "image/jpeg"),
        }
    ]


def test_form_strings_are_coerced(client: openai.OpenAI, sim: Sim) -> None:
    client.images.edit(
        model="flux-2-flex",
        prompt="refine",
        image=[PNG],
        size="1024x1536",
        n=2,
        extra_body={
            "seed": 42,
            "prompt_upsampling": True,
            "steps": 30,
            "guidance": 2.5,
            "output_format": "png",
        },
    )
    bodies = sorted(sim.bodies(), key=lambda b: b["seed"])
    common = {
        "model": "flux-2-flex",
        "prompt": "refine",
        "input_image": data_url(PNG, "image/png"),
        "aspect_ratio": "2:3",
        "prompt_upsampling": True,
        "steps": 30,
        "guidance": 2.5,
        "output_format": "png",
    }
    assert bodies == [{**common, "seed": 42}, {**common, "seed": 43}]


def test_edit_with_json_body(gateway: Gateway, sim: Sim) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/edits",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "flux-2-pro", "prompt": "json edit", "image": ["https://example.com/x.png"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert sim.bodies() == [
        {"model": "flux-2-pro", "prompt": "json edit", "input_image": "https://example.com/x.png"}
    ]


def test_non_image_file_is_rejected(client: openai.OpenAI, sim: Sim) -> None:
    try:
        client.images.edit(model="flux-2-pro", prompt="x", image=[PNG, b"GIF89a not really"])
    except openai.BadRequestError as exc:
        assert exc.param == "image[1]"
    else:
        raise AssertionError("expected a 400")
    assert sim.requests() == []


def test_mask_file_is_rejected(client: openai.OpenAI, sim: Sim) -> None:
    try:
        client.images.edit(model="flux-2-pro", prompt="x", image=[PNG], mask=PNG)
    except openai.BadRequestError as exc:
        assert (exc.param, exc.code) == ("mask", "unsupported_parameter")
    else:
        raise AssertionError("expected a 400")
    assert sim.requests() == []


def test_too_many_files_for_klein(client: openai.OpenAI, sim: Sim) -> None:
    try:
        client.images.edit(model="flux-2-klein-4b", prompt="x", image=[PNG] * 5)
    except openai.BadRequestError as exc:
        assert exc.param == "input_image_5"
    else:
        raise AssertionError("expected a 400")
    assert sim.requests() == []
