"""Signed webhooks: the URL rules, the Standard Webhooks signature, retries, and delivery state
that outlives a worker. Receivers are real servers on 127.0.0.1 free ports; refusals of other
addresses are tested on the check functions, which send nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import ConfigError, InvalidRequest
from gateway.jobs.record import JobRecord, new_job_id
from gateway.metrics import Metrics
from gateway.settings import JobsSettings, Settings, TeamSettings
from gateway.state.connection import RedisConnection
from gateway.state.deliveries.base import Deliveries
from gateway.state.deliveries.memory import MemoryDeliveries
from gateway.state.deliveries.redis import RedisDeliveries
from gateway.webhooks.rules import check_addresses, check_webhook_url, resolve_check
from gateway.webhooks.signing import signed_headers
from gateway.webhooks.worker import Webhooks
from tests.conftest import CLIENT_KEY, Gateway, gateway_settings, start_gateway
from tests.helpers import RedisServer, Sim, ThreadServer
from tests.redis_topologies import ClusterSet

SECRET_ENV = "TEST_WEBHOOK_SECRET"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
WAIT_S = 20.0


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def team(hosts: list[str], secret_env: str | None = SECRET_ENV) -> TeamSettings:
    return TeamSettings(name="design", webhook_secret_env=secret_env, webhook_hosts=hosts)


def refusal(call: Callable[[], None]) -> dict[str, str | None]:
    with pytest.raises(InvalidRequest) as caught:
        call()
    return caught.value.body()["error"]


def refused(rules: TeamSettings, url: str, jobs: JobsSettings) -> dict[str, str | None]:
    """The error `check_webhook_url` answers for `url`."""
    return refusal(lambda: check_webhook_url(rules, url, jobs))


HTTP_OK = JobsSettings(allow_http_webhooks=True)
HTTPS_ONLY = JobsSettings()


# --- the rules, on the check functions ---------------------------------------------------


def test_a_team_without_a_secret_cannot_use_webhooks() -> None:
    error = refusal(
        lambda: check_webhook_url(
            team(["hooks.example.com"], None), "https://hooks.example.com/x", HTTPS_ONLY
        )
    )
    assert error == {
        "message": "webhook_url is refused: the team has no webhook secret (webhook_secret_env) "
        "to sign webhooks with.",
        "type": "invalid_request_error",
        "param": "webhook_url",
        "code": "invalid_value",
    }


def test_an_empty_secret_variable_is_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "")
    error = refusal(
        lambda: check_webhook_url(
            team(["hooks.example.com"]), "https://hooks.example.com/", HTTPS_ONLY
        )
    )
    assert error["param"] == "webhook_url"


def test_only_the_teams_hosts_are_accepted() -> None:
    only_one = team(["127.0.0.1"])
    for url in ("http://127.0.0.2:8080/hook", "http://localhost:8080/hook"):
        error = refused(only_one, url, HTTP_OK)
        host = url.split("//")[1].split(":")[0]
        assert error["message"] == (
            f"webhook_url is refused: host {host!r} is not in the team's webhook_hosts."
        )
        assert error["param"] == "webhook_url"
    check_webhook_url(only_one, "http://127.0.0.1:8080/hook", HTTP_OK)


def test_host_patterns_match_subdomains_only() -> None:
    wild = team(["*.example.com"])
    check_webhook_url(wild, "https://hooks.example.com/a?b=c", HTTPS_ONLY)
    check_webhook_url(wild, "https://HOOKS.Example.COM/", HTTPS_ONLY)
    for url in ("https://example.com/", "https://example.com.evil.net/", "https://a@evil.net/"):
        assert refused(wild, url, HTTPS_ONLY)["param"] == ("webhook_url")


def test_plain_http_needs_allow_http_webhooks() -> None:
    local = team(["127.0.0.1"])
    error = refusal(lambda: check_webhook_url(local, "http://127.0.0.1/hook", HTTPS_ONLY))
    assert error["message"] == "webhook_url is refused: it must be an https URL."
    check_webhook_url(local, "http://127.0.0.1/hook", HTTP_OK)
    for url in ("ftp://127.0.0.1/x", "127.0.0.1/x", "file:///etc/passwd", "http://[::1/"):
        assert refused(local, url, HTTP_OK)["param"] == ("webhook_url")


INSIDE = [
    "127.0.0.1",
    "127.0.0.2",
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "::1",
    "fe80::1",
    "fc00::5",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",
]


@pytest.mark.parametrize("address", INSIDE)
def test_loopback_private_and_link_local_addresses_are_refused(address: str) -> None:
    named = team(["hooks.example.com"])
    error = refusal(
        lambda: check_addresses(named, "hooks.example.com", [ipaddress.ip_address(address)])
    )
    assert error["message"] == (
        f"webhook_url is refused: host 'hooks.example.com' resolves to a non-public address "
        f"({ipaddress.ip_address(address)}) that webhook_hosts does not list literally."
    )
    assert error["param"] == "webhook_url"


def test_a_non_public_address_listed_literally_is_accepted() -> None:
    listed = team(["hooks.example.com", "127.0.0.1", "::1"])
    check_addresses(listed, "hooks.example.com", [ipaddress.ip_address("127.0.0.1")])
    check_addresses(listed, "hooks.example.com", [ipaddress.ip_address("::1")])
    check_webhook_url(listed, "http://[::1]:9000/hook", HTTP_OK)
    with pytest.raises(InvalidRequest):
        check_addresses(listed, "hooks.example.com", [ipaddress.ip_address("127.0.0.2")])


def test_public_addresses_are_accepted() -> None:
    named = team(["hooks.example.com"])
    public = [ipaddress.ip_address(a) for a in ("93.184.216.34", "2606:4700:4700::1111")]
    check_addresses(named, "hooks.example.com", public)


def test_one_inside_address_among_public_ones_is_refused() -> None:
    named = team(["hooks.example.com"])
    found = [ipaddress.ip_address(a) for a in ("93.184.216.34", "10.0.0.7")]
    error = refusal(lambda: check_addresses(named, "hooks.example.com", found))
    assert "(10.0.0.7)" in str(error["message"])


async def test_a_name_resolving_to_loopback_is_refused_unless_the_address_is_listed() -> None:
    by_name = team(["localhost"])
    with pytest.raises(InvalidRequest) as caught:
        await resolve_check(by_name, "http://localhost:9/hook", HTTP_OK)
    assert caught.value.param == "webhook_url"
    assert "resolves to a non-public address" in caught.value.message
    both = team(["localhost", "127.0.0.1", "::1"])
    await resolve_check(both, "http://localhost:9/hook", HTTP_OK)


def test_whsec_secrets_are_used_base64_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert team([]).webhook_secret() == b"0123456789abcdef0123456789abcdef"
    monkeypatch.setenv(SECRET_ENV, "plain-text-secret")
    assert team([]).webhook_secret() == b"plain-text-secret"


def test_a_malformed_whsec_secret_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "whsec_not*base64")
    with pytest.raises(ConfigError, match="TEST_WEBHOOK_SECRET holds a whsec_ secret"):
        Settings(teams=[{"name": "design", "webhook_secret_env": SECRET_ENV}])


def test_webhook_hosts_are_bare_hosts() -> None:
    with pytest.raises(ValueError, match="not a bare host"):
        team(["https://hooks.example.com"])
    with pytest.raises(ValueError, match="not a bare host"):
        team(["hooks.example.com:8443"])
    assert team(["Hooks.Example.com", "[::1]"]).webhook_hosts == ["hooks.example.com", "::1"]


def test_the_signature_verifies_with_the_reference_library() -> None:
    body = b'{"id":"imgjob_1","object":"image.job","status":"succeeded"}'
    now = int(time.time())
    headers = signed_headers(b"0123456789abcdef0123456789abcdef", "msg_imgjob_1", now, body)
    assert Webhook(SECRET).verify(body, headers) == {
        "id": "imgjob_1",
        "object": "image.job",
        "status": "succeeded",
    }
    assert headers["webhook-id"] == "msg_imgjob_1"
    assert headers["webhook-timestamp"] == str(now)


# --- the delivery state ------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "cluster"])
async def deliveries(request: pytest.FixtureRequest) -> AsyncIterator[Deliveries]:
    if request.param == "memory":
        yield MemoryDeliveries()
        return
    fixture = "redis_server" if request.param == "redis" else "redis_cluster"
    server: RedisServer | ClusterSet = request.getfixturevalue(fixture)
    server.flush()
    conn = RedisConnection(server.url)
    yield RedisDeliveries(conn)
    await conn.aclose()


async def test_a_claim_leases_due_items_to_one_owner(deliveries: Deliveries) -> None:
    assert await deliveries.delivery_add("msg_a", b"payload-a") is True
    assert await deliveries.delivery_add("msg_a", b"other") is False
    await deliveries.delivery_add("msg_b", b"payload-b")
    first = await deliveries.delivery_claim("one", 10, lease_s=60)
    assert sorted((c.id, c.payload, c.attempt) for c in first) == [
        ("msg_a", b"payload-a", 1),
        ("msg_b", b"payload-b", 1),
    ]
    assert await deliveries.delivery_claim("two", 10, lease_s=60) == []
    await deliveries.delivery_later("msg_a", "two", 0)  # not its owner: nothing moves
    assert await deliveries.delivery_claim("two", 10, lease_s=60) == []
    await deliveries.delivery_later("msg_a", "one", 0)
    again = await deliveries.delivery_claim("two", 10, lease_s=60)
    assert [(c.id, c.payload, c.attempt) for c in again] == [("msg_a", b"payload-a", 2)]
    await deliveries.delivery_remove("msg_a")
    await deliveries.delivery_remove("msg_b")
    await deliveries.delivery_later("msg_a", "two", 0)
    assert await deliveries.delivery_claim("two", 10, lease_s=0) == []


async def test_an_expired_lease_lets_another_owner_claim(deliveries: Deliveries) -> None:
    await deliveries.delivery_add("msg_a", b"p")
    assert len(await deliveries.delivery_claim("dead", 1, lease_s=0.2)) == 1
    taken: list[str] = []
    for _ in range(100):  # bounded: the lease is 0.2 s
        taken = [c.id for c in await deliveries.delivery_claim("alive", 1, lease_s=60)]
        if taken:
            break
        await asyncio.sleep(0.05)
    assert taken == ["msg_a"]


async def test_claims_respect_the_limit(deliveries: Deliveries) -> None:
    for i in range(5):
        await deliveries.delivery_add(f"msg_{i}", b"p")
    assert len(await deliveries.delivery_claim("w", 2, lease_s=60)) == 2
    assert len(await deliveries.delivery_claim("w", 0, lease_s=60)) == 0
    assert len(await deliveries.delivery_claim("w", 10, lease_s=60)) == 3


# --- delivery to a receiver on a free port -----------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    hang_first: bool = False
    received: list[Received] = field(default_factory=list)
    redirected: list[str] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=s3cret"

    async def hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self.arrived:
            self.received.append(Received(dict(request.headers), body))
            self.arrived.notify_all()
        if self.hang_first and len(self.received) == 1:
            await asyncio.Event().wait()  # never answers; cancelled when the gateway gives up
        status = self.statuses.pop(0) if self.statuses else 200
        if status in (301, 302, 307, 308):
            return web.Response(status=status, headers={"location": "/elsewhere"})
        return web.Response(status=status, text="ok")

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.redirected.append(request.method)
        return web.Response(status=200)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_route("*", "/elsewhere", receiver.elsewhere)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()


def webhook_settings(hosts: list[str] | None = None, **jobs: object) -> Settings:
    return Settings(
        teams=[
            {
                "name": "design",
                "keys": ["sk-test-design-0123456789"],
                "webhook_secret_env": SECRET_ENV,
                "webhook_hosts": ["127.0.0.1"] if hosts is None else hosts,
            }
        ],
        jobs={"allow_http_webhooks": True, "webhook_backoff_s": 0.05, **jobs},
    )


def ended_job(url: str) -> JobRecord:
    return JobRecord(
        id=new_job_id(),
        team="design",
        model="flux-2-pro",
        request_id="req_" + secrets.token_hex(8),
        created=int(time.time()),
        status="succeeded",
        webhook_url=url,
        result={"created": 1, "data": [{"url": "http://127.0.0.1:1/images/x.png"}]},
    )


@contextlib.asynccontextmanager
async def worker(
    settings: Settings, store: Deliveries, metrics: Metrics | None = None
) -> AsyncIterator[Webhooks]:
    webhooks = Webhooks(settings, store, metrics or Metrics())
    task = asyncio.create_task(webhooks.run_forever())
    try:
        yield webhooks
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await webhooks.aclose()


def outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        outcome: metrics.registry.get_sample_value(
            "gateway_webhook_deliveries_total", {"team": "design", "outcome": outcome}
        )
        or 0.0
        for outcome in ("delivered", "retried", "failed", "refused")
    }


class Attempts(logging.Handler):
    """Told of every attempt's outcome: the worker logs each one after counting it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


ATTEMPTS = Attempts()


@pytest.fixture(autouse=True)
def _attempts() -> Iterator[None]:
    logger = logging.getLogger("gateway.webhooks")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(ATTEMPTS)
    try:
        yield
    finally:
        logger.removeHandler(ATTEMPTS)
        logger.setLevel(level)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the worker to count what the receiver cannot see."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            ATTEMPTS.event.clear()
            await ATTEMPTS.event.wait()


async def test_an_ended_job_is_posted_signed_and_verifies() -> None:
    metrics = Metrics()
    async with (
        receiving(Receiver()) as receiver,
        worker(webhook_settings(), MemoryDeliveries(), metrics) as webhooks,
    ):
        job = ended_job(receiver.url)
        await webhooks.job_ended(job)
        await receiver.wait_for(1)
        await until(lambda: outcomes(metrics)["delivered"] == 1)
    got = receiver.received[0]
    assert Webhook(SECRET).verify(got.body, got.headers) == job.public()
    assert got.headers["webhook-id"] == f"msg_{job.id}"
    assert got.headers["Content-Type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 300
    assert outcomes(metrics) == {"delivered": 1, "retried": 0, "failed": 0, "refused": 0}


async def test_a_receiver_failing_twice_gets_three_attempts_with_one_id() -> None:
    metrics = Metrics()
    receiver = Receiver(statuses=[500, 503])
    async with (
        receiving(receiver),
        worker(webhook_settings(), MemoryDeliveries(), metrics) as webhooks,
    ):
        job = ended_job(receiver.url)
        await webhooks.job_ended(job)
        await receiver.wait_for(3)
        await until(lambda: outcomes(metrics)["delivered"] == 1)
    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {f"msg_{job.id}"}
    for got in receiver.received:
        assert Webhook(SECRET).verify(got.body, got.headers) == job.public()
    assert outcomes(metrics) == {"delivered": 1, "retried": 2, "failed": 0, "refused": 0}


async def test_redirects_are_not_followed_and_attempts_run_out() -> None:
    metrics = Metrics()
    receiver = Receiver(statuses=[302, 307, 301])
    store = MemoryDeliveries()
    async with (
        receiving(receiver),
        worker(webhook_settings(webhook_attempts=3), store, metrics) as webhooks,
    ):
        await webhooks.job_ended(ended_job(receiver.url))
        await receiver.wait_for(3)
        await until(lambda: outcomes(metrics)["failed"] == 1)
    assert receiver.redirected == []
    assert len(receiver.received) == 3
    assert outcomes(metrics) == {"delivered": 0, "retried": 2, "failed": 1, "refused": 0}
    assert await store.delivery_claim("anyone", 10, lease_s=1) == []


async def test_no_answer_within_the_timeout_is_retried() -> None:
    metrics = Metrics()
    receiver = Receiver(hang_first=True)
    async with (
        receiving(receiver),
        worker(webhook_settings(webhook_timeout_s=0.3), MemoryDeliveries(), metrics) as webhooks,
    ):
        job = ended_job(receiver.url)
        await webhooks.job_ended(job)
        await receiver.wait_for(2)
        await until(lambda: outcomes(metrics)["delivered"] == 1)
    assert [r.headers["webhook-id"] for r in receiver.received] == [f"msg_{job.id}"] * 2
    assert outcomes(metrics) == {"delivered": 1, "retried": 1, "failed": 0, "refused": 0}


async def test_a_job_ended_twice_is_delivered_once() -> None:
    metrics = Metrics()
    async with (
        receiving(Receiver()) as receiver,
        worker(webhook_settings(), MemoryDeliveries(), metrics) as webhooks,
    ):
        job = ended_job(receiver.url)
        await webhooks.job_ended(job)
        await webhooks.job_ended(job)
        await until(lambda: outcomes(metrics)["delivered"] == 1)
    assert len(receiver.received) == 1


async def test_a_host_resolving_inside_is_refused_at_delivery_without_a_request() -> None:
    """`localhost` listed by name, its address not: the connector's resolver refuses it."""
    metrics = Metrics()
    async with (
        receiving(Receiver()) as receiver,
        worker(webhook_settings(hosts=["localhost"]), MemoryDeliveries(), metrics) as webhooks,
    ):
        await webhooks.job_ended(ended_job(f"http://localhost:{receiver.port}/hook"))
        await until(lambda: outcomes(metrics)["refused"] == 1)
    assert receiver.received == []
    assert outcomes(metrics) == {"delivered": 0, "retried": 0, "failed": 0, "refused": 1}


async def test_rules_are_checked_again_at_each_attempt() -> None:
    """A delivery queued under one config and attempted under another that drops the host."""
    metrics = Metrics()
    store = MemoryDeliveries()
    async with receiving(Receiver()) as receiver:
        before = Webhooks(webhook_settings(), store, Metrics())
        await before.job_ended(ended_job(receiver.url))
        await before.aclose()
        async with worker(webhook_settings(hosts=["hooks.example.com"]), store, metrics):
            await until(lambda: outcomes(metrics)["refused"] == 1)
    assert receiver.received == []


async def test_a_pending_delivery_survives_a_restart_on_redis(redis_server: RedisServer) -> None:
    redis_server.flush()
    receiver = Receiver(statuses=[500])
    async with receiving(receiver):
        first_metrics = Metrics()
        conn = RedisConnection(redis_server.url)
        settings = webhook_settings(webhook_backoff_s=1.0)
        async with worker(settings, RedisDeliveries(conn), first_metrics) as webhooks:
            job = ended_job(receiver.url)
            await webhooks.job_ended(job)
            await receiver.wait_for(1)
            await until(lambda: outcomes(first_metrics)["retried"] == 1)
        await conn.aclose()  # this replica is gone; its retry is due in 1 s

        second_metrics = Metrics()
        conn = RedisConnection(redis_server.url)
        async with worker(settings, RedisDeliveries(conn), second_metrics):
            await receiver.wait_for(2)
            await until(lambda: outcomes(second_metrics)["delivered"] == 1)
        await conn.aclose()
    assert [r.headers["webhook-id"] for r in receiver.received] == [f"msg_{job.id}"] * 2
    assert Webhook(SECRET).verify(receiver.received[1].body, receiver.received[1].headers) == (
        job.public()
    )


async def test_two_workers_on_redis_deliver_each_webhook_once(redis_server: RedisServer) -> None:
    redis_server.flush()
    metrics = Metrics()
    conns = [RedisConnection(redis_server.url) for _ in range(2)]
    settings = webhook_settings()
    async with (
        receiving(Receiver()) as receiver,
        worker(settings, RedisDeliveries(conns[0]), metrics) as one,
        worker(settings, RedisDeliveries(conns[1]), metrics) as two,
    ):
        jobs = [ended_job(receiver.url) for _ in range(20)]
        for i, job in enumerate(jobs):
            await (one if i % 2 else two).job_ended(job)
        await receiver.wait_for(20)
        await until(lambda: outcomes(metrics)["delivered"] == 20)
    for conn in conns:
        await conn.aclose()
    ids = sorted(r.headers["webhook-id"] for r in receiver.received)
    assert ids == sorted(f"msg_{job.id}" for job in jobs)


# --- end to end: an async request to a real gateway ---------------------------------------


class ThreadReceiver:
    """A receiver in its own server thread, for tests that drive a gateway synchronously."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.arrived = threading.Event()
        self.server = ThreadServer(
            Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        ).start()

    async def hook(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), await request.body()))
        self.arrived.set()
        return Response(status_code=204)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"


@pytest.fixture
def thread_receiver() -> Iterator[ThreadReceiver]:
    receiver = ThreadReceiver()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def webhook_gateway(sim: Sim, tmp_path: Path) -> Iterator[Gateway]:
    settings = gateway_settings(
        sim,
        tmp_path / "cache",
        teams=[
            {
                "name": "design",
                "keys": [CLIENT_KEY],
                "webhook_secret_env": SECRET_ENV,
                "webhook_hosts": ["127.0.0.1"],
            }
        ],
        jobs={"allow_http_webhooks": True},
    )
    gw = start_gateway(settings)
    yield gw
    gw.server.stop()


def test_an_async_request_with_a_webhook_url_is_posted_the_job_when_it_ends(
    webhook_gateway: Gateway, thread_receiver: ThreadReceiver, sim: Sim
) -> None:
    accepted = httpx.post(
        f"{webhook_gateway.url}/v1/images/generations",
        headers={"authorization": f"Bearer {CLIENT_KEY}", "prefer": "respond-async"},
        json={"model": "flux-2-pro", "prompt": "x", "webhook_url": thread_receiver.url},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert thread_receiver.arrived.wait(WAIT_S), "no webhook arrived"
    got = thread_receiver.received[0]
    job = Webhook(SECRET).verify(got.body, got.headers)
    read_back = httpx.get(
        f"{webhook_gateway.url}/v1/images/jobs/{job_id}",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        timeout=30,
    ).json()
    assert job == read_back
    assert job["status"] == "succeeded"
    assert got.headers["webhook-id"] == f"msg_{job_id}"
    image = httpx.get(job["result"]["data"][0]["url"], timeout=30)
    assert image.content == httpx.get(sim.results()[0]["url"], timeout=30).content
    assert "webhook_url" not in sim.bodies()[0]
    assert len(thread_receiver.received) == 1


def test_a_refused_webhook_url_is_a_400_before_anything_is_spent(
    webhook_gateway: Gateway, sim: Sim
) -> None:
    for url in ("http://127.0.0.2:9/hook", "http://localhost:9/hook"):
        answer = httpx.post(
            f"{webhook_gateway.url}/v1/images/generations",
            headers={"authorization": f"Bearer {CLIENT_KEY}", "prefer": "respond-async"},
            json={"model": "flux-2-pro", "prompt": "x", "webhook_url": url},
            timeout=30,
        )
        assert answer.status_code == 400
        host = url.split("//")[1].split(":")[0]
        assert answer.json() == {
            "error": {
                "message": f"webhook_url is refused: host {host!r} is not in the team's "
                "webhook_hosts.",
                "type": "invalid_request_error",
                "param": "webhook_url",
                "code": "invalid_value",
            }
        }
    assert sim.requests() == []
