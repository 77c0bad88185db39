"""Generation through the real OpenAI SDK: the exact upstream body, fan-out and both formats."""

from __future__ import annotations

import base64

import httpx
import openai

from tests.conftest import Gateway
from tests.helpers import Sim, data_url, image_bytes

PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG", (10, 120, 30))


def test_extra_body_references_reach_upstream_as_native_body(
    client: openai.OpenAI, sim: Sim
) -> None:
    refs = {
        "input_image": "https://example.com/person.jpg",
        "input_image_2": data_url(PNG, "image/png"),
        "input_image_3": "https://example.com/bird.webp",
    }
    result = client.images.generate(
        model="flux-2-pro",
        prompt="The person from image 1 pets the cat from image 2",
        extra_body={**refs, "seed": 42, "output_format": "png", "safety_tolerance": 3},
    )
    assert sim.bodies() == [
        {
            "model": "flux-2-pro",
            "prompt": "The person from image 1 pets the cat from image 2",
            **refs,
            "seed": 42,
            "output_format": "png",
            "safety_tolerance": 3,
        }
    ]
    assert result.data[0].url is not None
    assert sim.requests()[0]["headers"]["authorization"] in {f"Bearer {k}" for k in sim.keys}


def test_image_list_maps_in_order(client: openai.OpenAI, sim: Sim) -> None:
    urls = [f"https://example.com/{i}.png" for i in range(4)]
    client.images.generate(model="flux-2-klein-4b", prompt="merge", extra_body={"image": urls})
    body = sim.bodies()[0]
    assert body == {
        "model": "flux-2-klein-4b",
        "prompt": "merge",
        "input_image": urls[0],
        "input_image_2": urls[1],
        "input_image_3": urls[2],
        "input_image_4": urls[3],
    }


def test_images_objects_map_in_order(client: openai.OpenAI, sim: Sim) -> None:
    client.images.generate(
        model="flux-2-pro",
        prompt="merge",
        extra_body={
            "images": [{"image_url": "https://example.com/a.png"}, "https://example.com/b.png"]
        },
    )
    assert sim.bodies()[0] == {
        "model": "flux-2-pro",
        "prompt": "merge",
        "input_image": "https://example.com/a.png",
        "input_image_2": "https://example.com/b.png",
    }


def test_size_becomes_reduced_aspect_ratio_and_openai_fields_are_not_sent(
    client: openai.OpenAI, sim: Sim
) -> None:
    client.images.generate(
        model="flux-2-pro",
        prompt="wide",
        size="1536x1024",
        n=1,
        response_format="url",
        user="alice",
        quality="auto",
    )
    assert sim.bodies() == [{"model": "flux-2-pro", "prompt": "wide", "aspect_ratio": "3:2"}]


def test_width_height_become_aspect_ratio_on_the_aggregator(
    client: openai.OpenAI, sim: Sim
) -> None:
    client.images.generate(
        model="flux-2-flex",
        prompt="tall",
        extra_body={"width": 768, "height": 1024, "steps": 20, "guidance": 3.5},
    )
    assert sim.bodies() == [
        {
            "model": "flux-2-flex",
            "prompt": "tall",
            "aspect_ratio": "3:4",
            "steps": 20,
            "guidance": 3.5,
        }
    ]


def test_fan_out_uses_consecutive_seeds(client: openai.OpenAI, sim: Sim) -> None:
    result = client.images.generate(model="flux-2-pro", prompt="four", n=4, extra_body={"seed": 7})
    seeds = sorted(body["seed"] for body in sim.bodies())
    assert seeds == [7, 8, 9, 10]
    assert len(result.data) == 4
    assert len({item.url for item in result.data}) == 4
    assert sorted(item.model_extra["seed"] for item in result.data) == [7, 8, 9, 10]


def test_url_and_b64_json_carry_the_upstream_bytes(
    gateway: Gateway, client: openai.OpenAI, sim: Sim
) -> None:
    as_url = client.images.generate(model="flux-2-pro", prompt="same", extra_body={"seed": 5})
    as_b64 = client.images.generate(
        model="flux-2-pro", prompt="same", response_format="b64_json", extra_body={"seed": 5}
    )
    produced = sim.results()
    assert len(produced) == 2
    upstream_bytes = [httpx.get(f"{sim.url}/_sim/results/{r['id']}").content for r in produced]
    served = httpx.get(as_url.data[0].url)
    assert served.status_code == 200
    assert served.content == upstream_bytes[0]
    assert base64.b64decode(as_b64.data[0].b64_json) == upstream_bytes[1] == upstream_bytes[0]
    assert as_b64.data[0].url is None


def test_response_headers(gateway: Gateway, sim: Sim) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={"authorization": "Bearer sk-test-design-0123456789"},
        json={"model": "flux-2-pro", "prompt": "headers"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["x-gateway-upstream"] == "agg"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert isinstance(body["created"], int)
    assert body["data"][0]["url"].startswith(f"{gateway.url}/images/")


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [
        "flux-2-pro",
        "flux-2-max",
        "flux-2-flex",
        "flux-2-klein-9b",
        "flux-2-klein-4b",
        "flux-kontext-pro",
        "flux-kontext-max",
    ]
    assert {m.owned_by for m in models.data} == {"black-forest-labs"}
    kontext = client.models.retrieve("flux-kontext-pro")
    assert (
        kontext.model_extra["flux"]["upstream_kinds"]["openai-images"]["max_reference_images"] == 1
    )
