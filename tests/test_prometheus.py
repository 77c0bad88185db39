"""The shipped dashboard and alert rules, evaluated by a real Prometheus scraping a gateway
under a short load with successes, errors, rejections, a cooling key and a lost result.

Every panel query must parse and return data, so a panel built on a metric the gateway does
not export (or a typo in a name or label) fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.conftest import CLIENT_KEY, LIMITED_KEY, Gateway, gateway_settings, start_gateway
from tests.helpers import STARTUP_TIMEOUT_S, Sim, free_port
from tests.system_tools import require

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "flux-gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
TOKEN = "prometheus-scrape-token"
SPEC_METRICS = {
    "gateway_requests_total",
    "gateway_request_duration_seconds",
    "gateway_upstream_duration_seconds",
    "gateway_inflight_requests",
    "gateway_images_total",
    "gateway_rate_limited_total",
    "gateway_upstream_key_state",
    "gateway_upstream_errors_total",
    "gateway_rehost_bytes_total",
    "gateway_rehost_failures_total",
    "gateway_cache_objects",
    "gateway_spend_usd_total",
}
LABEL_VALUES = re.compile(r"label_values\((\w+), (\w+)\)")
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m"}
T = TypeVar("T")


def tool(name: str) -> str:
    """A Prometheus binary: required in CI (`.ci/run` installs it), optional on a laptop."""
    return require(name)


def poll(check: Callable[[], T | None], what: str, timeout: float = STARTUP_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "flux-gateway",
                    "authorization": {"type": "Bearer", "credentials": TOKEN},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self.log = workdir / "prometheus.log"
        self.output = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        poll(self._ready, "Prometheus to be ready")

    def _ready(self) -> bool | None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200 or None
        except httpx.TransportError:
            return None

    def api(self, path: str, **params: str) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/api/v1/{path}", params=params).json()
        return answer

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def last_scrape(self) -> float:
        """When the newest scrape of the gateway started (on a bare selector, `timestamp()`
        gives the sample's own time rather than the evaluation time)."""
        found = self.query('timestamp(up{job="flux-gateway"})')
        return float(found[0]["value"][1]) if found else 0.0

    def wait_scraped_after(self, moment: float) -> float:
        return poll(lambda: t if (t := self.last_scrape()) > moment else None, "a scrape")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.output.close()


@pytest.fixture
def observed(sim: Sim, tmp_path: Path) -> Iterator[tuple[Gateway, Prometheus]]:
    binary = tool("prometheus")
    settings = gateway_settings(
        sim,
        tmp_path / "cache",
        server={"metrics_token": TOKEN},
        teams=[
            {"name": "design", "keys": [CLIENT_KEY], "monthly_budget_usd": 10.0},
            {"name": "limited", "keys": [LIMITED_KEY], "rpm": 2, "monthly_budget_usd": 1.0},
        ],
    )
    gw = start_gateway(settings)
    try:
        prometheus = Prometheus(binary, tmp_path, gw.url.removeprefix("http://"))
        try:
            yield gw, prometheus
        finally:
            prometheus.stop()
    finally:
        gw.server.stop()


def drive_load(gw: Gateway, sim: Sim) -> None:
    """Successes, 400s, 401, 429s (team rpm), an upstream 500, a retried and a lost download,
    and a key left cooling."""

    def post(key: str, expected: int, **body: Any) -> None:
        answer = httpx.post(
            f"{gw.url}/v1/images/generations",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "flux-2-pro", "prompt": "load", **body},
            timeout=60,
        )
        assert answer.status_code == expected, answer.text

    for n in (1, 2):
        post(CLIENT_KEY, 200, n=n)
    post(CLIENT_KEY, 200, model="flux-kontext-pro")
    post(CLIENT_KEY, 400, steps=10)
    post(CLIENT_KEY, 404, model="not-a-model")
    post("sk-not-a-key", 401)
    for expected in (200, 200, 429, 429):
        post(LIMITED_KEY, expected)
    sim.faults(fail_status=500, fail_count=1)
    post(CLIENT_KEY, 502)
    sim.faults(result_status=500, result_status_count=1)
    post(CLIENT_KEY, 200)
    sim.faults(result_not_image=True)
    post(CLIENT_KEY, 502)
    sim.faults(rate_limit_keys={sim.keys[0]: 120})
    post(CLIENT_KEY, 200)
    post(CLIENT_KEY, 200)


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included."""
    found = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        found += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return found


def promql(expr: str) -> str:
    """What Grafana would send: its time ranges filled in, template variables matching all."""
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_and_alerts_work_on_a_real_prometheus(
    observed: tuple[Gateway, Prometheus], sim: Sim
) -> None:
    gw, prometheus = observed
    prometheus.wait_scraped_after(time.time())
    drive_load(gw, sim)
    prometheus.wait_scraped_after(prometheus.wait_scraped_after(time.time()))
    assert prometheus.query('up{job="flux-gateway"} == 1'), "the scrapes failed"

    dashboard = json.loads(DASHBOARD.read_text())
    queries = panel_queries(dashboard)
    assert len(queries) >= 20
    for title, expr in queries:
        assert prometheus.query(promql(expr)), f"panel {title!r} shows no data: {expr}"
    used = {name for _, expr in queries for name in re.findall(r"gateway_\w+", expr)}
    covered = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert covered >= SPEC_METRICS

    for variable in dashboard["templating"]["list"]:
        values = LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert values is not None, variable["query"]
        metric, label = values.groups()
        assert prometheus.query(f"count by ({label}) ({metric})"), variable["name"]

    rules = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    for rule in rules:
        prometheus.query(rule["expr"])
    loaded = prometheus.api("rules")["data"]["groups"]
    assert {r["name"] for g in loaded for r in g["rules"]} == {r["alert"] for r in rules}
    assert {r["health"] for g in loaded for r in g["rules"] if "health" in r} <= {"ok", "unknown"}

    assert prometheus.query('gateway_requests_totl{job="flux-gateway"}') == []


def test_shipped_prometheus_files_pass_promtool() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
    ):
        checked = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisioning_points_at_the_dashboard_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    [datasource] = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "flux-gateway.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
