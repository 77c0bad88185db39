"""The console's JSON API and its state: each team's gallery (paged, private, pruned), usage
against limits, usage series and recent errors for operators, on memory and Redis."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cache import ImageMeta, open_cache
from gateway.cache.retention import RetentionSweep
from gateway.console.gallery import Gallery
from gateway.keys import hash_key
from gateway.metrics import Metrics
from gateway.settings import CacheSettings
from gateway.state.admission.base import Counters, Limits, Reservation
from gateway.state.base import State
from gateway.state.connection import RedisConnection
from gateway.state.memory import memory_state
from gateway.state.redis import redis_state
from tests.conftest import Gateway, Launch, gateway_settings
from tests.helpers import RedisServer, Sim, image_bytes
from tests.test_cache import backdate, chunked

ALPHA_KEY = "sk-test-console-alpha-0123456789"
BETA_KEY = "sk-test-console-beta-0123456789"
ADMIN_KEY = "sk-test-console-admin-0123456789"
GENERATIONS = "/v1/images/generations"
Make = Callable[..., Gateway]


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def make_gateway(launch: Launch, sim: Sim, tmp_path: Path) -> Make:
    """Gateways with teams alpha (limited) and beta and an admin key, on each state backend."""
    serial = itertools.count()

    def make(cache_dir: Path | None = None, **cache: Any) -> Gateway:
        settings = gateway_settings(
            sim,
            cache_dir or tmp_path / f"cache{next(serial)}",
            teams=[
                {
                    "name": "alpha",
                    "keys": [ALPHA_KEY],
                    "rpm": 50,
                    "max_concurrency": 4,
                    "images_per_day": 100,
                    "monthly_budget_usd": 20.0,
                },
                {"name": "beta", "keys": [BETA_KEY]},
            ],
            admin={"key_hashes": [hash_key(ADMIN_KEY)]},
        )
        for name, value in cache.items():
            setattr(settings.cache, name, value)
        return launch(settings)

    return make


def generate(gw: Gateway, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{GENERATIONS}",
        headers=auth(key),
        json={"model": "flux-2-pro", "prompt": "a lighthouse", **body},
        timeout=60,
    )


def get(gw: Gateway, path: str, key: str | None) -> httpx.Response:
    return httpx.get(f"{gw.url}{path}", headers=auth(key) if key else {}, timeout=30)


def gallery(gw: Gateway, key: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(f"{gw.url}/v1/console/images", headers=auth(key), params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def walk(gw: Gateway, key: str, limit: int) -> list[dict[str, Any]]:
    """Every image of the team, page by page, following `next_before`."""
    seen: list[dict[str, Any]] = []
    page = gallery(gw, key, limit=limit)
    while True:
        assert len(page["data"]) <= limit
        seen += page["data"]
        if page["next_before"] is None:
            return seen
        page = gallery(gw, key, limit=limit, before=page["next_before"])


def test_each_team_sees_only_its_own_results_newest_first(make_gateway: Make) -> None:
    gw = make_gateway()
    first = generate(gw, ALPHA_KEY, seed=7, n=2, prompt="alpha one").json()["data"]
    other = generate(gw, BETA_KEY, prompt="beta's secret plan").json()["data"]
    last = generate(gw, ALPHA_KEY, model="flux-kontext-pro", prompt="alpha two").json()["data"]

    alpha = gallery(gw, ALPHA_KEY)
    assert alpha["object"] == "list" and alpha["next_before"] is None
    urls = [item["url"] for item in alpha["data"]]
    assert urls[0] == last[0]["url"]
    assert set(urls[1:]) == {item["url"] for item in first}
    created = [item["created"] for item in alpha["data"]]
    assert created == sorted(created, reverse=True)
    newest = alpha["data"][0]
    assert (newest["model"], newest["prompt"]) == ("flux-kontext-pro", "alpha two")
    assert {item["seed"] for item in alpha["data"][1:]} == {7, 8}
    body = httpx.get(newest["url"]).content
    assert newest["size"] == len(body)
    assert newest["content_type"].startswith("image/")
    assert newest["id"] in newest["url"] and newest["request_id"].startswith("req_")

    beta = gallery(gw, BETA_KEY)["data"]
    assert [item["url"] for item in beta] == [other[0]["url"]]
    assert not set(urls) & {item["url"] for item in beta}
    assert "beta's secret plan" not in str(alpha)


def test_history_pages_cover_every_image_once(make_gateway: Make) -> None:
    gw = make_gateway()
    for _ in range(3):
        assert generate(gw, ALPHA_KEY, n=2).status_code == 200
    everything = gallery(gw, ALPHA_KEY, limit=100)["data"]
    assert len(everything) == 6
    for limit in (1, 4, 6):
        assert walk(gw, ALPHA_KEY, limit) == everything


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("before=soon", "before"),
        ("before=inf", "before"),
    ],
)
def test_history_rejects_bad_paging(make_gateway: Make, query: str, param: str) -> None:
    gw = make_gateway()
    answer = get(gw, f"/v1/console/images?{query}", ALPHA_KEY)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_prompts_are_not_shown_when_not_kept(make_gateway: Make) -> None:
    gw = make_gateway(keep_prompts=False)
    assert generate(gw, ALPHA_KEY, prompt="never stored").status_code == 200
    [item] = gallery(gw, ALPHA_KEY)["data"]
    assert item["prompt"] is None


def test_a_vanished_image_is_skipped_and_dropped_from_the_index(make_gateway: Make) -> None:
    gw = make_gateway()
    for _ in range(3):
        assert generate(gw, ALPHA_KEY).status_code == 200
    items = gallery(gw, ALPHA_KEY)["data"]
    gone = items[1]
    cache = open_cache(gw.settings.cache)
    image = asyncio.run(cache.get(gone["id"]))
    assert image is not None
    asyncio.run(cache.delete(image))
    assert walk(gw, ALPHA_KEY, 1) == [items[0], items[2]]
    assert gallery(gw, ALPHA_KEY)["data"] == [items[0], items[2]]


def test_console_routes_keep_the_usual_auth(make_gateway: Make) -> None:
    gw = make_gateway()
    for path in ("/v1/console/images", "/v1/console/usage"):
        for key in (None, "sk-wrong", ADMIN_KEY):
            answer = get(gw, path, key)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"
    for path in ("/admin/usage/series", "/admin/errors"):
        for key in (None, ALPHA_KEY, "sk-admin-wrong"):
            assert get(gw, path, key).status_code == 401
        assert get(gw, path, ADMIN_KEY).status_code == 200


def test_team_usage_shows_what_is_used_of_each_limit(make_gateway: Make) -> None:
    gw = make_gateway()
    assert generate(gw, ALPHA_KEY, n=2).status_code == 200
    assert generate(gw, ALPHA_KEY, model="flux-2-max").status_code == 200
    assert generate(gw, ALPHA_KEY, steps=20).status_code == 400
    assert generate(gw, BETA_KEY).status_code == 200
    usage = get(gw, "/v1/console/usage", ALPHA_KEY).json()
    assert usage["team"] == "alpha" and usage["models"] == ["*"]
    minute = usage["requests_this_minute"]
    assert (minute["used"], minute["limit"]) == (2, 50)
    assert 0 < minute["resets_in_s"] <= 60
    assert usage["in_flight"] == {"used": 0, "limit": 4}
    assert usage["images_today"] == {"used": 3, "limit": 100}
    assert usage["spend_this_month_usd"] == {"used": pytest.approx(0.13), "limit": 20.0}
    beta = get(gw, "/v1/console/usage", BETA_KEY).json()
    assert beta["requests_this_minute"]["used"] == 1
    assert beta["images_today"] == {"used": 1, "limit": None}
    assert beta["spend_this_month_usd"]["limit"] is None


def test_usage_series_has_one_value_per_team_and_day(make_gateway: Make) -> None:
    gw = make_gateway()
    assert generate(gw, ALPHA_KEY, n=3).status_code == 200
    assert generate(gw, BETA_KEY, steps=5).status_code == 400
    series = get(gw, "/admin/usage/series?days=3", ADMIN_KEY).json()
    assert len(series["days"]) == 3
    assert series["days"][-1] == datetime.now(UTC).date().isoformat()
    by_team = {entry["team"]: entry for entry in series["data"]}
    assert set(by_team) == {"alpha", "beta"}
    assert by_team["alpha"]["requests"] == [0, 0, 1]
    assert by_team["alpha"]["images"] == [0, 0, 3]
    assert by_team["alpha"]["spend_usd"] == [0, 0, pytest.approx(0.09)]
    assert by_team["beta"]["errors"] == [0, 0, 1]
    assert len(get(gw, "/admin/usage/series", ADMIN_KEY).json()["days"]) == 30
    bad = get(gw, "/admin/usage/series?days=0", ADMIN_KEY)
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "days")


def test_recent_errors_list_teams_errors_newest_first(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway()
    invalid = generate(gw, ALPHA_KEY, steps=20)
    sim.faults(fail_status=500, fail_count=1)
    failed = generate(gw, BETA_KEY, model="flux-2-max")
    assert (invalid.status_code, failed.status_code) == (400, 502)
    assert generate(gw, "sk-stranger").status_code == 401
    assert get(gw, "/images/not-an-image.png", None).status_code == 404

    errors = get(gw, "/admin/errors", ADMIN_KEY).json()["data"]
    assert [e["request_id"] for e in errors] == [
        failed.headers["x-request-id"],
        invalid.headers["x-request-id"],
    ]
    newest, oldest = errors
    assert (newest["status"], newest["code"], newest["team"], newest["model"]) == (
        502,
        "upstream_error",
        "beta",
        "flux-2-max",
    )
    assert newest["route"] == GENERATIONS
    assert (oldest["status"], oldest["team"], oldest["code"]) == (
        400,
        "alpha",
        "unsupported_parameter",
    )
    assert "steps" in oldest["message"]
    assert oldest["time"] <= newest["time"] <= time.time()
    assert len(get(gw, "/admin/errors?limit=1", ADMIN_KEY).json()["data"]) == 1


def test_a_restarted_memory_gateway_rebuilds_its_galleries(
    make_gateway: Make, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "shared-cache"
    first = make_gateway(cache_dir)
    urls = [generate(first, ALPHA_KEY).json()["data"][0]["url"] for _ in range(2)]
    beta_url = generate(first, BETA_KEY).json()["data"][0]["url"]
    first.server.stop()

    second = make_gateway(cache_dir)
    deadline = time.monotonic() + 20
    shown: list[str] = []
    while len(shown) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        shown = [item["url"].split("/")[-1] for item in gallery(second, ALPHA_KEY)["data"]]
    assert shown == [url.split("/")[-1] for url in reversed(urls)]
    beta = gallery(second, BETA_KEY)["data"]
    assert [item["url"].split("/")[-1] for item in beta] == [beta_url.split("/")[-1]]


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield memory_state()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    backend = redis_state(RedisConnection(server.url))
    yield backend
    await backend.aclose()


async def test_index_pages_by_score_and_removes(state: State) -> None:
    for member, score in [("a", 1.5), ("b", 2.25), ("c", 3.0), ("d", 4.125)]:
        await state.listings.index_add("g", member, score)
    await state.listings.index_add("other", "x", 10.0)
    assert await state.listings.index_page("g", None, 3) == [("d", 4.125), ("c", 3.0), ("b", 2.25)]
    assert await state.listings.index_page("g", 3.0, 10) == [("b", 2.25), ("a", 1.5)]
    assert await state.listings.index_page("g", 1.5, 10) == []
    await state.listings.index_add("g", "a", 5.0)
    await state.listings.index_remove("g", ["c", "missing"])
    assert await state.listings.index_page("g", None, 10) == [("a", 5.0), ("d", 4.125), ("b", 2.25)]
    assert await state.listings.index_page("nothing", None, 10) == []


async def test_capped_list_keeps_the_newest(state: State) -> None:
    for i in range(7):
        await state.listings.list_push("recent", f"e{i}".encode(), keep=5)
    assert await state.listings.list_read("recent", 3) == [b"e6", b"e5", b"e4"]
    assert await state.listings.list_read("recent", 100) == [b"e6", b"e5", b"e4", b"e3", b"e2"]
    assert await state.listings.list_read("empty", 10) == []


async def test_counters_read_sees_admissions_without_taking_any(state: State) -> None:
    names = Counters("team-c", "20261125", "202611")
    limits = Limits(10, 5, 100, 10_000)
    assert (await state.admission.admit(names, "r1", limits, 3, 90)).refused is None
    assert (await state.admission.admit(names, "r2", limits, 1, 30)).refused is None
    await state.admission.settle(
        Reservation(names, "r1", state.backend), 2, 60
    )  # used 2 of its 3 images, 60 of its 90 micro-USD
    read = await state.admission.counters_read(names)
    assert (read.window_requests, read.in_flight, read.day_images, read.month_micros) == (
        2,
        1,
        3,
        90,
    )
    assert 0 < read.window_reset_s <= 60
    assert (await state.admission.counters_read(names)).window_requests == 2
    empty = await state.admission.counters_read(Counters("nobody", "20261125", "202611"))
    assert (empty.window_requests, empty.in_flight, empty.day_images, empty.month_micros) == (
        0,
        0,
        0,
        0,
    )


async def test_retention_drops_removed_images_from_the_gallery(
    state: State, tmp_path: Path
) -> None:
    settings = CacheSettings(dir=tmp_path / "images", retention_days=30)
    cache = open_cache(settings)
    gallery = Gallery(state.listings, cache)
    png = image_bytes("PNG")
    stored = []
    for team in ("alpha", "alpha", "beta"):
        meta = ImageMeta(team, "flux-2-pro", "req_x", "agg")
        image = await cache.store(chunked(png), "image/png", meta)
        await gallery.add(image)
        stored.append(image)
    await backdate(cache, stored[0], days=31)
    await backdate(cache, stored[2], days=31)
    sweep = RetentionSweep(cache, state.locks, settings, Metrics(), on_removed=gallery.remove)
    assert await sweep.sweep_once() == 2
    assert await state.listings.index_page("gallery:alpha", None, 10) == [
        (stored[1].id, stored[1].created)
    ]
    assert await state.listings.index_page("gallery:beta", None, 10) == []
    await sweep.stop()


def test_the_page_and_its_modules_are_served_from_the_package(gateway: Gateway) -> None:
    page = httpx.get(f"{gateway.url}/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert httpx.get(f"{gateway.url}/console/").status_code in (200, 307)
    pending = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text)
    assert len(pending) == 2
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        asset = httpx.get(f"{gateway.url}{path}")
        assert asset.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in asset.headers["content-type"]
            folder = path.rsplit("/", 1)[0]
            pending += [
                f"{folder}/{name}" for name in re.findall(r'from "\./([\w.]+)"', asset.text)
            ]
            code = asset.text.replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in code and "https://" not in code, path
    assert len([path for path in seen if path.endswith(".js")]) == 9
    assert httpx.get(f"{gateway.url}/console/static/../app.py").status_code == 404


def test_openapi_documents_the_console_routes(gateway: Gateway) -> None:
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v1/console/images", "/v1/console/usage"):
        assert "security" not in paths[path]["get"]
    for path in ("/admin/usage/series", "/admin/errors"):
        assert paths[path]["get"]["security"] == [{"adminKey": []}]
    params = {p["name"]: p for p in paths["/v1/console/images"]["get"]["parameters"]}
    assert params["before"]["schema"]["type"] == "number"
    assert params["limit"]["schema"]["maximum"] == 100
    schemas = doc["components"]["schemas"]
    assert set(schemas["ConsoleImage"]["properties"]) >= {"url", "model", "created", "seed"}
    assert "spend_this_month_usd" in schemas["TeamUsage"]["properties"]
