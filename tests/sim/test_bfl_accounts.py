"""BFL per account: the active-task cap and credits shared by an account's keys, and polling
URLs on a regional host other than the submit host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.keys import fingerprint
from gateway.sim import SimConfig
from tests.sim.conftest import running_sim
from tests.sim.helpers import bfl_submit, credits_of, png_data_url, poll_until_final, set_credits

BUSY = {"detail": "You have reached the maximum number of active tasks; try again later."}
TEAM = ["a1", "a2"]
SOLO = fingerprint("solo")


@pytest.fixture(scope="module")
async def accounts_url() -> AsyncIterator[str]:
    config = SimConfig(
        keys=[*TEAM, "solo"],
        accounts={"team": TEAM},
        max_active=8,
        credits=1000.0,
        poll_ready_after=60,
    )
    async with running_sim(config) as url:
        yield url


@pytest.fixture
async def accounts(accounts_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=accounts_url, timeout=10) as client:
        (await client.post("/_sim/reset")).raise_for_status()
        yield client


async def stats(client: httpx.AsyncClient) -> dict[str, object]:
    body: dict[str, object] = (await client.get("/_sim/stats")).json()
    return body


async def test_keys_of_one_account_share_its_cap(accounts: httpx.AsyncClient) -> None:
    for key in ["a1"] * 5 + ["a2"] * 3:
        assert (await bfl_submit(accounts, key=key)).status_code == 200
    for key in TEAM:
        refused = await bfl_submit(accounts, key=key)
        assert (refused.status_code, refused.json()) == (429, BUSY)
    assert (await bfl_submit(accounts, key="solo")).status_code == 200
    counted = await stats(accounts)
    assert counted["active"] == {fingerprint("a1"): 5, fingerprint("a2"): 3, SOLO: 1}
    assert counted["active_by_account"] == {"team": 8, SOLO: 1}
    assert counted["max_active_seen"] == {"team": 8, SOLO: 1}
    (await accounts.post("/_sim/reset")).raise_for_status()
    assert await stats(accounts) == {
        "submits": 0,
        "result_downloads": 0,
        "active": {},
        "active_by_account": {},
        "max_active_seen": {},
    }


async def test_kontext_max_is_capped_at_six_per_account_within_the_account_cap(
    accounts: httpx.AsyncClient,
) -> None:
    for key in ["a1", "a2"] * 3:
        assert (await bfl_submit(accounts, "flux-kontext-max", key=key)).status_code == 200
    refused = await bfl_submit(accounts, "flux-kontext-max", key="a1")
    assert (refused.status_code, refused.json()) == (429, BUSY)
    assert (await bfl_submit(accounts, "flux-kontext-max", key="solo")).status_code == 200
    assert (await bfl_submit(accounts, key="a2")).status_code == 200
    assert (await bfl_submit(accounts, key="a1")).status_code == 200
    assert (await bfl_submit(accounts, key="a1")).status_code == 429
    assert (await stats(accounts))["active_by_account"] == {"team": 8, SOLO: 1}


async def test_concurrent_submits_never_exceed_the_account_cap(accounts: httpx.AsyncClient) -> None:
    reference = png_data_url((640, 480), "purple")
    answers = await asyncio.gather(
        *(bfl_submit(accounts, key=TEAM[i % 2], input_image=reference) for i in range(30))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 8 + [429] * 22
    counted = await stats(accounts)
    assert counted["max_active_seen"] == {"team": 8}
    assert counted["active_by_account"] == {"team": 8}


async def test_keys_of_one_account_share_its_credits(accounts: httpx.AsyncClient) -> None:
    assert (await bfl_submit(accounts, key="a1")).json()["cost"] == 3.0
    assert await credits_of(accounts, "a2") == 997.0
    await set_credits(accounts, "a2", 0)
    refused = await bfl_submit(accounts, key="a1")
    assert (refused.status_code, refused.json()) == (402, {"detail": "Insufficient credits"})
    assert await credits_of(accounts, "a1") == 0.0
    assert await credits_of(accounts, "solo") == 1000.0


async def test_polling_url_names_the_poll_host_and_samples_stay_on_the_submit_host(
    client: httpx.AsyncClient, sim_url: str
) -> None:
    answer = (await bfl_submit(client)).json()
    port = urlsplit(sim_url).port
    assert answer["polling_url"] == f"http://localhost:{port}/v1/get_result?id={answer['id']}"
    ready = await poll_until_final(client, answer["polling_url"])
    assert ready["result"]["sample"].startswith(f"{sim_url}/results/{answer['id']}/sample.jpeg?")
    (poll,) = [
        r for r in (await client.get("/_sim/requests")).json()["requests"] if r["method"] == "GET"
    ]
    assert (poll["path"], poll["query"]) == ("/v1/get_result", f"id={answer['id']}")


async def test_without_a_poll_host_polling_stays_on_the_submit_host() -> None:
    async with (
        running_sim(SimConfig(poll_host=None)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        answer = (await bfl_submit(client, key="any")).json()
        assert answer["polling_url"] == f"{url}/v1/get_result?id={answer['id']}"
        assert (await poll_until_final(client, answer["polling_url"], "any"))["status"] == "Ready"
