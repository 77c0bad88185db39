"""Prometheus metrics (SPEC §8): names are interface, labels are bounded.

Labels only ever carry team names from the config, model ids from the catalog, upstream names,
key fingerprints, route templates and status codes — never a key, prompt, id or user string.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
KEY_STATES = ("healthy", "cooling", "disabled")


class Metrics:
    """All of the gateway's metrics, registered in one registry held by the app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Client requests answered",
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
            "Request time not spent waiting on upstreams or downloads",
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
            "gateway_upstream_errors",
            "Upstream failures by kind",
            ["upstream", "kind"],
            registry=r,
        )
        self.rehost_bytes = Counter(
            "gateway_rehost_bytes", "Result bytes downloaded into the cache", registry=r
        )
        self.rehost_failures = Counter(
            "gateway_rehost_failures",
            "Results that could not be rehosted",
            ["reason"],
            registry=r,
        )
        self.rehost_retries = Counter(
            "gateway_rehost_retries", "Result downloads retried", ["reason"], registry=r
        )
        self.cache_objects = Gauge(
            "gateway_cache_objects",
            "Images in the result cache",
            registry=r,
            multiprocess_mode="max",
        )
        self.spend = Counter(
            "gateway_spend_usd", "Spend at list price", ["team", "model"], registry=r
        )
        self.state_errors = Counter(
            "gateway_state_errors", "State backend failures", ["mode"], registry=r
        )

    def set_key_state(self, upstream: str, key: str, state: str) -> None:
        for candidate in KEY_STATES:
            self.key_state.labels(upstream=upstream, key=key, state=candidate).set(
                1 if candidate == state else 0
            )
