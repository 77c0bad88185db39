"""Teams pay what the jobs really cost: per megapixel with references, the upstream's own figure
first, reserved as an upper bound at admission and settled to the cent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.keys import hash_key
from tests.conftest import CLIENT_KEY, Gateway, Launch, gateway_settings, sim_upstream
from tests.helpers import Sim, data_url, image_bytes

ADMIN_KEY = "sk-admin-costs-0123456789"
ONE_MP = data_url(image_bytes("PNG", size=(1024, 1024)), "image/png")
TWO_MP = data_url(image_bytes("PNG", size=(1500, 1000)), "image/png")


def settings(sim: Sim, tmp_path: Path, team: dict[str, Any] | None = None) -> Any:
    return gateway_settings(
        sim,
        tmp_path,
        upstreams=[
            sim_upstream(sim, "agg", "openai-images", models=["flux-2-pro"]),
            sim_upstream(sim, "bfl", "bfl", models=["flux-2-max"]),
        ],
        teams=[{"name": "design", "keys": [CLIENT_KEY], **(team or {})}],
        admin={"key_hashes": [hash_key(ADMIN_KEY)]},
    )


def edit_with_two_references(gw: Gateway) -> httpx.Response:
    """flux-2-pro at 1 MP with references of 1 MP and 1.43 MP (billed 2): $0.075."""
    return gw.post(size="1024x1024", image=[ONE_MP, TWO_MP])


def spend_metric(gw: Gateway) -> dict[str, float]:
    text = httpx.get(f"{gw.url}/metrics").text
    pattern = r'^gateway_spend_usd_total\{model="([^"]+)",team="design"\} (\S+)$'
    return {m: float(v) for m, v in re.findall(pattern, text, re.MULTILINE)}


def usage_totals(gw: Gateway) -> dict[str, Any]:
    answer = httpx.get(
        f"{gw.url}/admin/usage?team=design", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    return dict(answer.json()["data"][0]["totals"])


def test_spend_of_a_known_mix_is_exact_to_the_cent(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    gw = launch(settings(sim, tmp_path))
    # Aggregator, flux-2-pro list price 0.03 / 0.015 / 0.015.
    assert gw.post().status_code == 200  # 1 MP text-to-image: 0.030
    assert edit_with_two_references(gw).status_code == 200  # 0.03 + 0.015 × 3 = 0.075
    # BFL, flux-2-max 0.07 / 0.03 / 0.03; the simulator reports BFL's own cost.
    four_mp = gw.post(model="flux-2-max", width=2048, height=2048)  # 0.07 + 0.03 × 3 = 0.16
    assert four_mp.status_code == 200, four_mp.text
    assert four_mp.json()["size"] == "2048x2048"
    sim.faults(bfl_cost=12.5)  # the upstream's figure wins over the table's 0.07
    assert gw.post(model="flux-2-max").status_code == 200  # 0.125
    assert usage_totals(gw)["spend_usd"] == pytest.approx(0.39, abs=1e-9)
    assert usage_totals(gw)["images"] == 4
    assert spend_metric(gw) == pytest.approx({"flux-2-pro": 0.105, "flux-2-max": 0.285})


def test_a_budget_for_two_edits_admits_two_and_refuses_the_third(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    gw = launch(settings(sim, tmp_path, {"monthly_budget_usd": 0.15}))
    assert edit_with_two_references(gw).status_code == 200
    assert edit_with_two_references(gw).status_code == 200
    third = edit_with_two_references(gw)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "insufficient_quota"
    assert third.json()["error"]["type"] == "insufficient_quota"
    assert len(sim.bodies()) == 2
    assert usage_totals(gw)["spend_usd"] == pytest.approx(0.15, abs=1e-9)


def test_the_reservation_is_an_upper_bound_and_settlement_gives_the_rest_back(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    """With no size the output may follow the first reference up to 4 MP: reserved as 4 MP
    ($0.03 + 0.015 × 3 + 0.015 × 3 = $0.12), settled at the 1 MP it was ($0.075)."""
    gw = launch(settings(sim, tmp_path, {"monthly_budget_usd": 0.19}))
    assert gw.post(image=[ONE_MP, TWO_MP]).status_code == 200
    assert usage_totals(gw)["spend_usd"] == pytest.approx(0.075, abs=1e-9)
    # 0.075 spent + 0.12 reserved > 0.19: refused before any upstream call.
    assert gw.post(image=[ONE_MP, TWO_MP]).status_code == 429
    assert len(sim.bodies()) == 1


def test_https_references_count_four_megapixels_each(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    gw = launch(settings(sim, tmp_path, {"monthly_budget_usd": 0.15}))
    refs = {
        "input_image": "https://example.com/a.png",
        "input_image_2": "https://example.com/b.png",
    }
    # 0.03 + 0.015 × 8 = 0.15 at 1 MP with two unknown references: admitted, and charged so.
    assert gw.post(size="1024x1024", **refs).status_code == 200
    assert usage_totals(gw)["spend_usd"] == pytest.approx(0.15, abs=1e-9)


def test_per_upstream_prices_and_plain_numbers_per_image(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    s = settings(sim, tmp_path)
    s.upstreams[0].prices = {"flux-2-pro": 0.02}
    gw = launch(s)
    assert gw.post(n=2).status_code == 200
    assert gw.post(image=[ONE_MP, TWO_MP]).status_code == 200
    assert usage_totals(gw)["spend_usd"] == pytest.approx(0.06, abs=1e-9)
