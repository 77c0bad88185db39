"""Requests the simulator tests share: both protocols, faults, polling, test images."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
from PIL import Image

from gateway.media import to_data_url

AGG = "/v1/images/generations"
BEARER = {"authorization": "Bearer k1"}


def png_data_url(size: tuple[int, int], colour: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return to_data_url(buffer.getvalue(), "image/png")


async def generate(client: httpx.AsyncClient, key: str = "k1", **body: Any) -> httpx.Response:
    return await client.post(
        AGG,
        json={"model": "flux-2-pro", "prompt": "a fox"} | body,
        headers={"authorization": f"Bearer {key}"},
    )


async def image_at(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, Image.Image]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response, Image.open(io.BytesIO(response.content))


async def set_faults(client: httpx.AsyncClient, **faults: Any) -> None:
    (await client.put("/_sim/faults", json=faults)).raise_for_status()


async def set_credits(client: httpx.AsyncClient, key: str, credits: float) -> None:
    (await client.post("/_sim/credits", json={"key": key, "credits": credits})).raise_for_status()


async def credits_of(client: httpx.AsyncClient, key: str = "k1") -> float:
    response = await client.get("/v1/credits", headers={"x-key": key})
    credits: float = response.json()["credits"]
    return credits


async def bfl_submit(
    client: httpx.AsyncClient, model: str = "flux-2-pro", key: str = "k1", **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/{model}", json={"prompt": "a fox"} | body, headers={"x-key": key}
    )


async def poll_until_final(client: httpx.AsyncClient, url: str, key: str = "k1") -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer: dict[str, Any] = (await client.get(url, headers={"x-key": key})).json()
        if answer["status"] != "Pending":
            return answer
        await asyncio.sleep(0.02)
    raise AssertionError("job never left Pending")
