"""Prometheus metrics (SPEC §8): names are interface, labels are bounded.

Labels only ever carry team names from the config, model ids from the catalog, upstream names,
key fingerprints, route templates and status codes — never a key, prompt, id or user string.
With `serve --workers N` prometheus-client writes every value to files in
`PROMETHEUS_MULTIPROC_DIR` and `/metrics` merges them, so each gauge declares how its values
from several processes combine. prometheus-client reads that variable itself, when it is
imported; this module only asks it which way it chose (settings hold the folder for `serve`).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

# From a fast model's seconds to a slow edit's minutes; the last buckets catch timeouts.
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
# The gateway's own work: sub-millisecond when healthy, seconds when waiting for a key slot.
OVERHEAD_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
KEY_STATES = ("healthy", "cooling", "disabled")


def shared_files() -> bool:
    """Whether prometheus-client writes values to the shared files of several workers."""
    return values.ValueClass is not values.MutexValue


class CacheObjects:
    """`gateway_cache_objects`: the cache's own count, moved by each store between recounts.

    A recount by any worker is the newest value (`mostrecent`), so workers agree after it.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "gateway_cache_objects",
            "Images in the result cache",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.value = 0

    def set(self, count: int) -> None:
        self.value = count
        self.gauge.set(count)

    def inc(self, amount: int = 1) -> None:
        self.set(self.value + amount)


class Metrics:
    """All of the gateway's metrics, registered in one registry held by the app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered",
            ["route", "model", "team", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "End-to-end request time",
            ["route", "model"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Request time not spent waiting on upstreams or result downloads",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Upstream job time, submit to result link",
            ["upstream", "model", "outcome"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests",
            "Image requests in flight",
            ["team"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.jobs = Gauge(
            "gateway_jobs",
            "Async jobs by status: queued and running on this replica now; succeeded and "
            "failed ended by this replica since it started",
            ["status"],
            registry=r,
            multiprocess_mode="livesum",
        )
        for status in JOB_STATUSES:
            self.jobs.labels(status=status).inc(0)  # every status has a series from start-up
        self.images = Counter(
            "gateway_images", "Images delivered to clients", ["model", "team"], registry=r
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused by team limits",
            ["team", "reason"],
            registry=r,
        )
        self.key_state = Gauge(
            "gateway_upstream_key_state",
            "1 for the current state of each upstream key",
            ["upstream", "key", "state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures by kind", ["upstream", "kind"], registry=r
        )
        self.rehost_bytes = Counter(
            "gateway_rehost_bytes", "Result bytes downloaded into the cache", registry=r
        )
        self.rehost_failures = Counter(
            "gateway_rehost_failures", "Results that could not be rehosted", ["reason"], registry=r
        )
        self.rehost_retries = Counter(
            "gateway_rehost_retries", "Result downloads retried", ["reason"], registry=r
        )
        self.cache_objects = CacheObjects(r)
        self.spend = Counter(
            "gateway_spend_usd", "Spend at list price", ["team", "model"], registry=r
        )
        self.team_budget = Gauge(
            "gateway_team_budget_usd",
            "Each team's monthly budget from the config (for budget alerts)",
            ["team"],
            registry=r,
            multiprocess_mode="max",
        )
        self.state_errors = Counter(
            "gateway_state_errors", "State backend failures", ["mode"], registry=r
        )
        self.webhook_deliveries = Counter(
            "gateway_webhook_deliveries",
            "Webhook deliveries by how they ended, and attempts retried",
            ["team", "outcome"],
            registry=r,
        )

    def set_key_state(self, upstream: str, key: str, state: str) -> None:
        for candidate in KEY_STATES:
            self.key_state.labels(upstream=upstream, key=key, state=candidate).set(
                1 if candidate == state else 0
            )

    def add_team(self, team: str, budget_usd: float | None) -> None:
        """Series that exist from start-up, so dashboards and alerts see every team at once."""
        self.inflight.labels(team=team).inc(0)
        if budget_usd is not None:
            self.team_budget.labels(team=team).set(budget_usd)

    def exposition(self) -> tuple[bytes, str]:
        """The `/metrics` body: this process's registry, or every worker's files merged."""
        if not shared_files():
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST


JOB_STATUSES = ("queued", "running", "succeeded", "failed")


def process_exited() -> None:
    """Drop this worker's live gauges (in-flight) from the shared files when it stops."""
    if shared_files():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
