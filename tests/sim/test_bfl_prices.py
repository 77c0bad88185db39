"""BFL's submit answer: `cost` by BFL's list prices, the megapixels it reports, and FLUX.2 sizes
scaled into 4 MP, as the real API does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.sim.helpers import (
    bfl_submit,
    credits_of,
    image_at,
    png_data_url,
    poll_until_final,
    set_faults,
)

SQUARE = png_data_url((1024, 1024), "red")
SMALL = png_data_url((300, 200), "blue")
LARGE = png_data_url((1500, 1500), "green")
ONE_MP = {"width": 1024, "height": 1024}


@pytest.mark.parametrize(
    ("model", "body", "cost", "input_mp", "output_mp"),
    [
        ("flux-2-pro", ONE_MP | {"input_image": SQUARE}, 4.5, 1.0, 1.0),
        ("flux-2-pro", {"width": 2048, "height": 2048}, 7.5, 0.0, 4.0),
        ("flux-2-pro", {"width": 1040, "height": 1024}, 4.5, 0.0, 1.02),
        (
            "flux-2-klein-4b",
            {"width": 2048, "height": 2048, "input_image": "https://example.com/a.png"},
            1.8,
            1.0,
            4.0,
        ),
        (
            "flux-2-klein-9b",
            ONE_MP | {"input_image": SMALL, "input_image_2": SMALL},
            1.9,
            0.11,
            1.0,
        ),
        ("flux-2-max", ONE_MP | {"input_image": LARGE}, 16.0, 2.15, 1.0),
        ("flux-2-flex", ONE_MP, 5.0, 0.0, 1.0),
        ("flux-kontext-pro", {"input_image": SQUARE, "input_image_2": LARGE}, 4.0, 3.15, 1.0),
        ("flux-kontext-max", {"aspect_ratio": "16:9"}, 8.0, 0.0, 1.0),
    ],
)
async def test_submit_reports_and_charges_the_list_price(
    client: httpx.AsyncClient,
    model: str,
    body: dict[str, Any],
    cost: float,
    input_mp: float,
    output_mp: float,
) -> None:
    submitted = await bfl_submit(client, model, **body)
    assert submitted.status_code == 200, submitted.text
    answer = submitted.json()
    assert set(answer) == {"id", "polling_url", "cost", "input_mp", "output_mp"}
    assert (answer["cost"], answer["input_mp"], answer["output_mp"]) == (cost, input_mp, output_mp)
    assert (await poll_until_final(client, answer["polling_url"]))["status"] == "Ready"
    assert await credits_of(client) == 100.0 - cost


async def test_reported_cost_fault_is_what_the_answer_says_and_the_account_pays(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, bfl_cost=2.25)
    answer = (await bfl_submit(client, "flux-2-max", width=2048, height=2048)).json()
    assert answer["cost"] == 2.25
    assert (await poll_until_final(client, answer["polling_url"]))["status"] == "Ready"
    assert await credits_of(client) == 97.75
    moderated = (await bfl_submit(client, prompt="a forbidden fox")).json()
    assert moderated["cost"] == 2.25
    assert (await poll_until_final(client, moderated["polling_url"]))["status"] == (
        "Request Moderated"
    )
    assert await credits_of(client) == 97.75


@pytest.mark.parametrize(
    ("body", "size", "cost", "output_mp"),
    [
        ({"width": 4992, "height": 2000}, (3232, 1296), 7.5, 3.99),
        ({"width": 2048, "height": 8192}, (1024, 4096), 7.5, 4.0),
        ({"height": 8192}, (2048, 2048), 7.5, 4.0),
        ({"width": 1024, "height": 4096}, (1024, 4096), 7.5, 4.0),
    ],
)
async def test_flux2_output_above_4_mp_is_scaled_down_not_refused(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    size: tuple[int, int],
    cost: float,
    output_mp: float,
) -> None:
    submitted = await bfl_submit(client, **body)
    assert submitted.status_code == 200, submitted.text
    answer = submitted.json()
    assert (answer["cost"], answer["output_mp"]) == (cost, output_mp)
    ready = await poll_until_final(client, answer["polling_url"])
    _, image = await image_at(client, ready["result"]["sample"])
    assert image.size == size


async def test_explicit_zero_width_fails_the_schema_like_the_real_api(
    client: httpx.AsyncClient,
) -> None:
    response = await bfl_submit(client, width=0, height=1024)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "width"],
                "msg": "Input should be greater than or equal to 64",
                "type": "greater_than_equal",
            }
        ]
    }
    assert (await client.get("/_sim/stats")).json()["active"] == {}


async def test_kontext_takes_webp(client: httpx.AsyncClient) -> None:
    answer = (await bfl_submit(client, "flux-kontext-pro", output_format="webp")).json()
    ready = await poll_until_final(client, answer["polling_url"])
    download, image = await image_at(client, ready["result"]["sample"])
    assert download.headers["content-type"] == "image/webp" and image.format == "WEBP"
