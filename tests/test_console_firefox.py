"""The web console in Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core.

No geckodriver and no browser download: tests/firefox/console.mjs launches /usr/bin/firefox-esr,
signs a team in, waits for its gallery and the playground's model list, and reports any page or
console errors. Missing firefox-esr or node skips the test locally and fails it in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CLIENT_KEY, Gateway, gateway_settings, start_gateway
from tests.helpers import LogLines, Sim, captured_logs
from tests.system_tools import require

FIREFOX = Path("/usr/bin/firefox-esr")
DRIVER = Path(__file__).resolve().parent / "firefox"
NODE_ENV = {"PUPPETEER_SKIP_DOWNLOAD": "1", "npm_config_fund": "false", "npm_config_audit": "false"}


def node_tools() -> tuple[str, str]:
    """node and npm, with firefox-esr present; missing, CI fails and elsewhere it skips."""
    require(str(FIREFOX))
    return require("node"), require("npm")


@pytest.fixture
def logs() -> Iterator[LogLines]:
    with captured_logs() as handler:
        yield handler


@pytest.fixture
def gateway_for_firefox(sim: Sim, tmp_path: Path, logs: LogLines) -> Iterator[Gateway]:
    gw = start_gateway(gateway_settings(sim, tmp_path / "cache"))
    yield gw
    gw.server.stop()


def test_a_team_signs_in_and_sees_its_gallery_in_firefox(
    gateway_for_firefox: Gateway, logs: LogLines, tmp_path: Path
) -> None:
    node, npm = node_tools()
    env = {**os.environ, **NODE_ENV}
    if not (DRIVER / "node_modules" / "puppeteer-core").is_dir():
        subprocess.run(
            [npm, "ci", "--prefix", str(DRIVER), "--ignore-scripts"],
            env=env,
            check=True,
            timeout=300,
        )
    made = gateway_for_firefox.post(prompt="a lighthouse at dusk, for firefox")
    assert made.status_code == 200, made.text

    screenshot = tmp_path / "console-firefox.png"
    env |= {
        "GATEWAY_URL": gateway_for_firefox.url,
        "CLIENT_KEY": CLIENT_KEY,
        "SCREENSHOT": str(screenshot),
        "FIREFOX": str(FIREFOX),
    }
    run = subprocess.run(
        [node, str(DRIVER / "console.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = run.stdout.strip().splitlines()
    assert output, f"no summary (exit {run.returncode}): {run.stderr}"
    summary = json.loads(output[-1])
    assert summary["errors"] == [], run.stderr
    assert summary["cards"] >= 1
    assert summary["models"] >= 1
    assert run.returncode == 0, run.stderr
    assert screenshot.stat().st_size > 0

    assert logs.lines
    for line in logs.lines:
        assert CLIENT_KEY not in line
