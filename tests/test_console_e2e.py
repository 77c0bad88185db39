"""The web console in a real headless Chromium, against a real gateway and the simulator.

A team signs in, generates with two uploaded reference images, sees the result in its gallery
and refines it; another team sees none of it; an operator re-enables a disabled upstream key.
The tests save the screenshots the docs show, and check that no key ever appears in a URL the
page requests, in what the gateway serves to the page, or in the gateway's logs.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.keys import fingerprint, hash_key
from gateway.service import Parts
from gateway.usage import DAY_FORMAT
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.helpers import LogLines, Sim, captured_logs, data_url, image_bytes
from tests.system_tools import require

if os.environ.get("CI") == "true":
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")

expect = sync_api.expect
Page = sync_api.Page

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}

ALPHA_KEY = "sk-e2e-alpha-team-secret-0123456789"
BETA_KEY = "sk-e2e-beta-team-secret-0123456789"
ADMIN_KEY = "sk-e2e-admin-secret-0123456789"
UNKNOWN_UPSTREAM_KEY = "sim-key-nobody-knows"
SECRETS = (ALPHA_KEY, BETA_KEY, ADMIN_KEY)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium. Missing, it fails the run in CI and skips elsewhere."""
    require(str(CHROMIUM))
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def logs() -> Iterator[LogLines]:
    with captured_logs() as handler:
        yield handler


@pytest.fixture(scope="module")
def console(
    sim: Sim, tmp_path_factory: pytest.TempPathFactory, logs: LogLines
) -> Iterator[Gateway]:
    """Teams alpha and beta and an admin key; the upstream's first key is one the simulator
    refuses (401), re-checked only after an hour, so it stays disabled until an operator acts."""
    settings = gateway_settings(
        sim,
        tmp_path_factory.mktemp("console-cache"),
        teams=[
            {"name": "alpha", "keys": [ALPHA_KEY], "rpm": 120, "monthly_budget_usd": 25.0},
            {"name": "beta", "keys": [BETA_KEY], "images_per_day": 500},
        ],
        admin={"key_hashes": [hash_key(ADMIN_KEY)]},
    )
    settings.upstreams[0].keys = [UNKNOWN_UPSTREAM_KEY, *sim.keys]
    settings.upstreams[0].recheck_s = 3600
    gw = start_gateway(settings)
    yield gw
    gw.server.stop()


class Session:
    """One browser tab on the console, with every URL it requested."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[sync_api.Request] = []
        page.on("request", lambda request: self.requests.append(request))

    def sign_in(self, key: str, operator: bool = False) -> None:
        self.page.goto(f"{self.base}/console")
        if operator:
            self.page.get_by_label("an admin key").check()
        self.page.get_by_label("Key", exact=True).fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def assert_keys_stayed_out(self) -> None:
        """No key in any URL; the bearer header only on the gateway's JSON API."""
        for request in self.requests:
            for secret in SECRETS:
                assert secret not in request.url
            if "authorization" in request.headers:
                path = request.url.removeprefix(self.base)
                assert path.startswith(("/v1/", "/admin/")), path
        for secret in SECRETS:
            assert secret not in self.page.content()


@pytest.fixture
def tab(browser: Any, console: Gateway) -> Iterator[Any]:
    """A fresh browser context (empty session storage) per call; laptop width by default."""
    contexts = []

    def open_tab(viewport: dict[str, int] = LAPTOP) -> Session:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        return Session(context.new_page(), console.url)

    yield open_tab
    for context in contexts:
        context.close()


def post(gw: Gateway, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/images/generations",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "flux-2-pro", "prompt": "x", **body},
        timeout=60,
    )


def assert_no_key_served_or_logged(gw: Gateway, logs: LogLines) -> None:
    served = [httpx.get(f"{gw.url}/console").text]
    for name in ("console.css", "js/main.js", "js/api.js", "js/team.js", "js/operator.js"):
        served.append(httpx.get(f"{gw.url}/console/static/{name}").text)
    assert logs.lines
    for text in [*served, *logs.lines]:
        for secret in (*SECRETS, UNKNOWN_UPSTREAM_KEY):
            assert secret not in text


def test_a_team_generates_from_uploads_sees_the_result_and_refines_it(
    tab: Any, console: Gateway, sim: Sim, tmp_path: Path, logs: LogLines
) -> None:
    png = image_bytes("PNG", (230, 60, 40), (48, 32))
    jpeg = image_bytes("JPEG", (30, 90, 220), (40, 40))
    (tmp_path / "sketch.png").write_bytes(png)
    (tmp_path / "palette.jpg").write_bytes(jpeg)
    for seed, model in [(11, "flux-2-max"), (12, "flux-kontext-pro"), (13, "flux-2-pro")]:
        assert post(console, ALPHA_KEY, prompt=f"study {seed}", seed=seed, model=model).is_success
    session = tab()
    page = session.page
    session.sign_in(ALPHA_KEY)
    expect(page.locator("#who-name")).to_have_text("Team alpha")
    gallery = page.locator("#gallery .tile")
    expect(gallery).to_have_count(3)
    expect(page.locator("[data-meter='Spend this month']")).to_contain_text("$25.00")

    page.get_by_label("Prompt", exact=True).fill(
        "a poster in the style of the sketch, with this palette"
    )
    page.get_by_label("Model", exact=True).select_option("flux-2-pro")
    expect(page.locator("#model-limits")).to_contain_text("up to 8 reference images")
    page.locator("#ref-files").set_input_files([tmp_path / "sketch.png", tmp_path / "palette.jpg"])
    expect(page.locator("#refs li")).to_have_count(2)
    expect(page.locator("#ref-count")).to_have_text("2 / 8")
    page.get_by_label("Model", exact=True).select_option("flux-kontext-pro")
    expect(page.locator("#ref-count")).to_have_text("2 / 1")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#generate-error")).to_contain_text("at most 1 reference image")
    page.get_by_label("Model", exact=True).select_option("flux-2-pro")
    page.get_by_label("Seed", exact=True).fill("4242")
    page.get_by_label("Size", exact=True).select_option("1536x1024")
    page.screenshot(path=SCREENSHOTS / "playground.png")

    sim.faults(latency=1.0)
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#progress")).to_be_hidden(timeout=30_000)
    sim.faults()
    expect(page.locator("#generate-error")).to_be_empty()
    expect(gallery).to_have_count(4)
    [sent] = sim.bodies()[-1:]
    assert sent["input_image"] == data_url(png, "image/png")
    assert sent["input_image_2"] == data_url(jpeg, "image/jpeg")
    assert (sent["seed"], sent["aspect_ratio"]) == (4242, "3:2")
    newest = gallery.first
    expect(newest).to_contain_text("seed 4242")
    expect(newest.locator(".dims")).to_have_text(re.compile(r"^\d+×\d+$"))
    first_url = newest.locator("img").get_attribute("src")
    assert first_url is not None and first_url.startswith(f"{console.url}/images/")
    page.locator("#results img").first.wait_for()
    page.screenshot(path=SCREENSHOTS / "playground.png", full_page=True)

    newest.locator(".thumb").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-link")).to_have_value(first_url)
    expect(page.locator("#viewer-prompt")).to_contain_text("a poster in the style")
    page.locator("#viewer-refine").click()
    expect(viewer).to_be_hidden()
    expect(page.locator("#refs li")).to_have_count(1)
    page.get_by_label("Prompt", exact=True).fill("the same poster, at night")
    page.get_by_role("button", name="Generate").click()
    expect(gallery).to_have_count(5)
    expect(page.locator("#generate-error")).to_be_empty()
    stored = httpx.get(first_url)
    content_type = stored.headers["content-type"]
    assert re.fullmatch(r"image/(png|jpeg|webp)", content_type)
    refined = sim.bodies()[-1]
    assert refined["input_image"] == data_url(stored.content, content_type)
    assert "input_image_2" not in refined
    assert refined["prompt"] == "the same poster, at night"
    page.locator(".gallery-section").screenshot(path=SCREENSHOTS / "gallery.png")

    session.assert_keys_stayed_out()
    api_calls = [r for r in session.requests if "/v1/console/images" in r.url]
    assert api_calls and all(r.headers["authorization"] == f"Bearer {ALPHA_KEY}" for r in api_calls)
    assert_no_key_served_or_logged(console, logs)


def test_another_team_sees_none_of_those_images_on_a_phone(tab: Any, console: Gateway) -> None:
    alpha_url = post(console, ALPHA_KEY, prompt="alpha's private launch art").json()["data"][0]
    beta_url = post(console, BETA_KEY, prompt="beta's own").json()["data"][0]["url"]
    session = tab(PHONE)
    page = session.page
    session.sign_in(BETA_KEY)
    expect(page.locator("#who-name")).to_have_text("Team beta")
    tiles = page.locator("#gallery .tile")
    expect(tiles.first).to_be_visible()
    sources = [img.get_attribute("src") for img in tiles.locator("img").all()]
    assert beta_url in sources
    assert alpha_url["url"] not in sources
    expect(page.get_by_text("alpha's private launch art")).to_have_count(0)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0

    beta_api = httpx.get(
        f"{console.url}/v1/console/images?limit=100",
        headers={"authorization": f"Bearer {BETA_KEY}"},
    ).json()["data"]
    assert beta_url in {item["url"] for item in beta_api}
    assert alpha_url["url"] not in {item["url"] for item in beta_api}
    assert all("alpha" not in (item["prompt"] or "") for item in beta_api)
    session.assert_keys_stayed_out()


def disabled_key(gw: Gateway) -> dict[str, Any] | None:
    upstreams = httpx.get(
        f"{gw.url}/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ).json()["data"]
    wanted = fingerprint(UNKNOWN_UPSTREAM_KEY)
    key: dict[str, Any] = next(k for k in upstreams[0]["keys"] if k["fingerprint"] == wanted)
    return key if key["state"] == "disabled" else None


def seed_history(gw: Gateway, days: int) -> dict[str, list[int]]:
    """Requests per team on the days before today, written through the gateway's own state
    on its own event loop, so the plot has a history to show."""
    parts: Parts[Any] = gw.server.server.config.app.state.parts  # type: ignore[attr-defined]
    today = datetime.now(UTC).date()
    history: dict[str, list[int]] = {"alpha": [], "beta": []}
    for back in range(days, 0, -1):
        day = (today - timedelta(days=back)).strftime(DAY_FORMAT)
        for team, base, swing in (("alpha", 14, 9), ("beta", 5, 6)):
            requests = base + (back * 7) % swing
            history[team].append(requests)
            counts = {"requests": requests, "images": requests, "spend_micros": requests * 30_000}
            assert gw.server.loop is not None
            asyncio.run_coroutine_threadsafe(
                parts.state.usage.usage_add(team, day, counts), gw.server.loop
            ).result(timeout=10)
    return history


def test_an_operator_sees_usage_and_errors_and_re_enables_a_key(
    tab: Any, console: Gateway, logs: LogLines
) -> None:
    history = seed_history(console, 29)
    for attempt in range(len(console.settings.upstreams[0].keys)):
        assert post(console, BETA_KEY, seed=attempt).status_code == 200
        if disabled_key(console) is not None:
            break
    key = disabled_key(console)
    assert key is not None and "401" in (key["last_error"] or "")
    assert post(console, ALPHA_KEY, n=2).status_code == 200
    refused = post(console, ALPHA_KEY, steps=30)
    assert refused.status_code == 400

    session = tab()
    page = session.page
    session.sign_in(ADMIN_KEY, operator=True)
    expect(page.locator("#who-name")).to_have_text("Operator")
    expect(page.locator("#chart svg g[data-series]")).to_have_count(2)
    expect(page.locator("#legend")).to_contain_text("alpha")
    week_ago = (datetime.now(UTC).date() - timedelta(days=7)).strftime("%m-%d")
    expect(page.locator("#chart g[data-series='beta'] title")).to_contain_text(
        [f"beta · {week_ago}: {history['beta'][-7]}"]
    )
    expect(
        page.locator(f"#errors tr[data-request='{refused.headers['x-request-id']}']")
    ).to_contain_text("unsupported_parameter")
    row = page.locator(f"#pool tr[data-key='{key['fingerprint']}']")
    expect(row.locator(".badge")).to_have_text("disabled")
    expect(row).to_contain_text("401")
    page.screenshot(path=SCREENSHOTS / "operator.png", full_page=True)

    row.get_by_role("button", name="Re-enable").click()
    expect(row.locator(".badge")).to_have_text("healthy")
    assert disabled_key(console) is None
    page.get_by_label("What to plot").select_option("images")
    expect(page.locator("#chart svg g[data-series]")).to_have_count(2)
    session.assert_keys_stayed_out()
    assert_no_key_served_or_logged(console, logs)


def test_a_wrong_key_is_refused_and_a_session_survives_a_reload(tab: Any, console: Gateway) -> None:
    session = tab()
    page = session.page
    session.sign_in("sk-not-a-key-of-this-gateway")
    expect(page.locator("#sign-in-error")).to_contain_text("not a team's client key")
    session.sign_in(ADMIN_KEY)
    expect(page.locator("#sign-in-error")).to_contain_text("not a team's client key")
    session.sign_in(ALPHA_KEY)
    expect(page.locator("#who-name")).to_have_text("Team alpha")
    page.reload()
    expect(page.locator("#who-name")).to_have_text("Team alpha")
    assert page.evaluate("sessionStorage.getItem('flux-console.key')") == ALPHA_KEY
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    session.assert_keys_stayed_out()
