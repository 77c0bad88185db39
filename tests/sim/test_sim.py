"""The simulator through a real socket: both protocols, signed links, faults, recording."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.sim.cli import add_arguments, config_from_args
from tests.sim.helpers import (
    AGG,
    BEARER,
    bfl_submit,
    generate,
    image_at,
    png_data_url,
    poll_until_final,
    set_faults,
)


async def test_aggregator_returns_a_jpeg_link_of_the_requested_ratio(
    client: httpx.AsyncClient, sim_url: str
) -> None:
    response = await generate(client, aspect_ratio="16:9")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"} and isinstance(body["created"], int)
    url = body["data"][0]["url"]
    assert url.startswith(f"{sim_url}/results/") and set(body["data"][0]) == {"url"}
    download, image = await image_at(client, url)
    assert download.headers["content-type"] == "image/jpeg" and image.format == "JPEG"
    width, height = image.size
    assert width % 16 == 0 and height % 16 == 0
    assert abs(width / height - 16 / 9) < 0.02 and 0.9e6 < width * height < 1.2e6


async def test_aggregator_output_is_deterministic_and_follows_its_inputs(
    client: httpx.AsyncClient,
) -> None:
    async def sample(**body: Any) -> bytes:
        response = await generate(client, **body)
        return (await client.get(response.json()["data"][0]["url"])).content

    first = await sample(seed=7, prompt="a red fox")
    assert await sample(seed=7, prompt="a red fox") == first
    assert await sample(seed=8, prompt="a red fox") != first
    assert await sample(seed=7, prompt="a blue fox") != first


async def test_aggregator_reference_sets_default_ratio_and_changes_the_image(
    client: httpx.AsyncClient,
) -> None:
    red, blue = png_data_url((300, 200), "red"), png_data_url((300, 200), "blue")
    first = await generate(client, seed=1, input_image=red, output_format="png")
    response, image = await image_at(client, first.json()["data"][0]["url"])
    assert image.format == "PNG" and abs(image.size[0] / image.size[1] - 1.5) < 0.02
    second = await generate(client, seed=1, input_image=blue, output_format="png")
    assert (await client.get(second.json()["data"][0]["url"])).content != response.content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 1}, "n"),
        ({"size": "1024x1024"}, "size"),
        ({"response_format": "url"}, "response_format"),
        ({"width": 1024}, "width"),
        ({"steps": 20}, "steps"),
        ({"safety_tolerance": 7}, "safety_tolerance"),
        ({"output_format": "webp"}, "output_format"),
        ({"input_image": "http://example.com/a.png"}, "input_image"),
        ({"input_image": "data:image/png;base64,/9j/4AAQSkZJRg=="}, "input_image"),
        (
            {"model": "flux-kontext-pro", "input_image_2": "https://example.com/a.png"},
            "input_image_2",
        ),
        ({"model": "dall-e-3"}, "model"),
    ],
)
async def test_aggregator_rejects_what_the_real_one_does_not_take(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await generate(client, **extra)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer nope"}])
async def test_aggregator_refuses_missing_or_unknown_keys(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(AGG, json={"model": "flux-2-pro", "prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_aggregator_moderates_the_trigger_word(client: httpx.AsyncClient) -> None:
    response = await generate(client, prompt="something Forbidden here")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "content_policy_violation"


async def test_rate_limit_fault_answers_429_with_retry_after_on_both_protocols(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, rate_limit_keys={"k1": 7})
    aggregator = await generate(client)
    assert aggregator.status_code == 429 and aggregator.headers["retry-after"] == "7"
    assert aggregator.json()["error"]["code"] == "rate_limit_exceeded"
    bfl = await bfl_submit(client)
    assert bfl.status_code == 429 and bfl.headers["retry-after"] == "7"
    assert (await bfl_submit(client, key="k2")).status_code == 200


async def test_fail_status_fires_the_given_number_of_times(client: httpx.AsyncClient) -> None:
    await set_faults(client, fail_status=502, fail_count=1)
    assert (await generate(client)).status_code == 502
    assert (await generate(client)).status_code == 200
    assert (await client.get("/_sim/faults")).json()["fail_count"] == 0


async def test_result_links_expire_and_need_their_signature(client: httpx.AsyncClient) -> None:
    await set_faults(client, result_url_ttl=0.5)
    url = (await generate(client)).json()["data"][0]["url"]
    assert (await client.get(url.replace("sig=", "sig=0"))).status_code == 403
    assert (await client.get(url)).status_code == 200
    expires = float(parse_qs(urlsplit(url).query)["exp"][0])
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    expired = await client.get(url)
    assert expired.status_code == 403 and b"AuthenticationFailed" in expired.content


async def test_bfl_submit_poll_ready_download(client: httpx.AsyncClient, sim_url: str) -> None:
    before = (await client.get("/v1/credits", headers={"x-key": "k1"})).json()["credits"]
    await set_faults(client, bfl_ready_after=0.2)
    submitted = await bfl_submit(client, width=512, height=256, output_format="webp")
    assert submitted.status_code == 200, submitted.text
    job = submitted.json()
    port = urlsplit(sim_url).port
    assert submitted.json() == {
        "id": job["id"],
        "polling_url": f"http://localhost:{port}/v1/get_result?id={job['id']}",
        "cost": 3.0,
        "input_mp": 0.0,
        "output_mp": 0.12,
    }
    pending = (await client.get(job["polling_url"], headers={"x-key": "k1"})).json()
    assert pending["status"] == "Pending"
    other = await client.get(job["polling_url"], headers={"x-key": "k2"})
    assert other.status_code == 404 and other.json()["status"] == "Task not found"
    ready = await poll_until_final(client, job["polling_url"])
    assert ready["status"] == "Ready" and isinstance(ready["result"]["seed"], int)
    download, image = await image_at(client, ready["result"]["sample"])
    assert download.headers["content-type"] == "image/webp" and image.size == (512, 256)
    after = (await client.get("/v1/credits", headers={"x-key": "k1"})).json()["credits"]
    assert after == pytest.approx(before - 3.0)


async def test_bfl_kontext_follows_its_reference(client: httpx.AsyncClient) -> None:
    reference = png_data_url((400, 200), "green")
    job = (await bfl_submit(client, "flux-kontext-pro", input_image=reference, seed=5)).json()
    assert job["input_mp"] == 0.08 and job["cost"] == 4.0
    ready = await poll_until_final(client, job["polling_url"])
    assert ready["result"]["seed"] == 5 and "/sample.png?" in ready["result"]["sample"]
    download, image = await image_at(client, ready["result"]["sample"])
    assert download.headers["content-type"] == "image/png"
    assert abs(image.size[0] / image.size[1] - 2) < 0.03


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        ("flux-2-pro", {"aspect_ratio": "1:1"}, "aspect_ratio"),
        ("flux-2-pro", {"width": 1000, "height": 1024}, "width"),
        ("flux-2-pro", {"safety_tolerance": 6}, "safety_tolerance"),
        ("flux-2-klein-4b", {"input_image_5": "https://example.com/a.png"}, "input_image_5"),
        ("flux-kontext-pro", {"aspect_ratio": "3:1"}, "aspect_ratio"),
        ("flux-2-pro", {"width": 0}, "width"),
        ("flux-2-flex", {"height": 48}, "height"),
        ("flux-kontext-pro", {"output_format": "gif"}, "output_format"),
    ],
)
async def test_bfl_validates_with_422(
    client: httpx.AsyncClient, model: str, body: dict[str, Any], field: str
) -> None:
    response = await bfl_submit(client, model, **body)
    assert response.status_code == 422
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]


async def test_bfl_auth_credits_and_capacity(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/flux-2-pro", json={"prompt": "x"})).status_code == 401
    assert (await bfl_submit(client, key="nope")).status_code == 403
    (await client.post("/_sim/credits", json={"key": "k2", "credits": 0})).raise_for_status()
    no_credit = await bfl_submit(client, key="k2")
    assert no_credit.status_code == 402 and no_credit.json() == {"detail": "Insufficient credits"}
    await set_faults(client, bfl_ready_after=30)
    for _ in range(6):
        assert (await bfl_submit(client, "flux-kontext-max")).status_code == 200
    assert (await bfl_submit(client, "flux-kontext-max")).status_code == 429
    assert (await bfl_submit(client, "flux-kontext-max", key="k3")).status_code == 200
    stats = (await client.get("/_sim/stats")).json()
    assert sorted(stats["active"].values()) == [1, 6] and stats["submits"] == 11


async def test_bfl_moderation_is_final_and_refunded(client: httpx.AsyncClient) -> None:
    submitted = (await bfl_submit(client, prompt="a forbidden thing")).json()
    answer = await poll_until_final(client, submitted["polling_url"])
    assert answer["status"] == "Request Moderated" and answer["details"]
    credits = (await client.get("/v1/credits", headers={"x-key": "k1"})).json()
    assert credits == {"credits": 100.0}


async def test_bfl_final_status_fault(client: httpx.AsyncClient) -> None:
    await set_faults(client, bfl_final_status="Error")
    submitted = (await bfl_submit(client)).json()
    assert (await poll_until_final(client, submitted["polling_url"]))["status"] == "Error"


async def test_requests_are_recorded_and_cleared(client: httpx.AsyncClient) -> None:
    await generate(client, seed=3)
    await bfl_submit(client, seed=4)
    recorded = (await client.get("/_sim/requests")).json()["requests"]
    assert [entry["path"] for entry in recorded] == [AGG, "/v1/flux-2-pro"]
    assert recorded[0]["json"] == {"model": "flux-2-pro", "prompt": "a fox", "seed": 3}
    assert recorded[0]["headers"]["authorization"] == "Bearer k1"
    assert recorded[1]["headers"]["x-key"] == "k1" and recorded[1]["method"] == "POST"
    await client.delete("/_sim/requests")
    assert (await client.get("/_sim/requests")).json() == {"requests": []}


async def test_results_handed_out_are_listed_with_their_bytes(client: httpx.AsyncClient) -> None:
    url = (await generate(client, seed=9)).json()["data"][0]["url"]
    (listed,) = (await client.get("/_sim/results")).json()["results"]
    assert listed["url"] == url and listed["expires"] == float(
        parse_qs(urlsplit(url).query)["exp"][0]
    )
    stored = await client.get(f"/_sim/results/{listed['id']}")
    assert stored.content == (await client.get(url)).content
    assert stored.headers["content-type"] == listed["content_type"] == "image/jpeg"
    downloads = [
        r for r in (await client.get("/_sim/requests")).json()["requests"] if r["method"] == "GET"
    ]
    assert [r["path"] for r in downloads] == [urlsplit(url).path]
    await client.delete("/_sim/requests")
    assert (await client.get("/_sim/results")).json() == {"results": []}


async def test_download_faults(client: httpx.AsyncClient) -> None:
    url = (await generate(client)).json()["data"][0]["url"]
    await set_faults(client, result_status=500, result_status_count=1)
    assert (await client.get(url)).status_code == 500
    assert (await client.get(url)).status_code == 200
    await set_faults(client, result_not_image=True)
    not_image = await client.get(url)
    assert not_image.headers["content-type"] == "image/png"
    assert not not_image.content.startswith(b"\x89PNG")
    await set_faults(client, result_oversize_mb=2)
    oversize = await client.get(url)
    assert len(oversize.content) == 2 * 1024 * 1024 and oversize.content.startswith(b"\x89PNG")
    await set_faults(client, result_truncate=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(url)
    assert (await client.get("/_sim/stats")).json()["result_downloads"] == 5


async def test_hang_fault_holds_the_submit_until_the_client_gives_up(
    client: httpx.AsyncClient,
) -> None:
    await set_faults(client, hang=True)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            AGG, json={"model": "flux-2-pro", "prompt": "x"}, headers=BEARER, timeout=0.3
        )
    await client.delete("/_sim/faults")
    assert (await generate(client)).status_code == 200


async def test_faults_reject_unknown_settings(client: httpx.AsyncClient) -> None:
    assert (await client.put("/_sim/faults", json={"nope": 1})).status_code == 422


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_arguments_build_the_config() -> None:
    ns = parsed("--port", "9", "--keys", "a, b,c", "--url-ttl", "5", "--latency", "1")
    config = config_from_args(ns)
    assert config.keys == ["a", "b", "c"] and config.url_ttl == 5 and config.latency == 1
    assert (config.max_active, config.accounts, config.poll_host) == (24, {}, "localhost")
    ns = parsed(
        "--keys", "a,b,c", "--max-active", "3", "--accounts", "one=a, b; two=c", "--poll-host", ""
    )
    config = config_from_args(ns)
    assert config.max_active == 3 and config.poll_host is None
    assert config.accounts == {"one": ["a", "b"], "two": ["c"]}


@pytest.mark.parametrize("text", ["one", "=a", "one=", "one=a;one=b"])
def test_cli_refuses_malformed_accounts(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parsed("--accounts", text)
    assert "expected NAME=KEY,KEY;NAME=KEY with unique names" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accounts", "one=secret-a;two=secret-a"], "a key belongs to one account only"),
        (["--keys", "secret-a", "--accounts", "one=secret-b"], "lists a key that `keys`"),
    ],
)
def test_cli_refuses_accounts_that_contradict_the_keys_without_quoting_them(
    argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        config_from_args(parsed(*argv))
    assert message in str(stopped.value) and "secret" not in str(stopped.value)
