"""`Webhooks`: an ended job's webhook queued in the state backend, then delivered by a worker.

`job_ended` keeps one delivery per job (its `webhook-id` is derived from the job id, so a job
ended twice by two replicas is still one delivery). The worker on every replica claims due
deliveries atomically under a lease and makes one attempt each: any 2xx ends the delivery;
another status, a redirect or no answer within `jobs.webhook_timeout_s` is retried after
`jobs.webhook_backoff_s`, doubling, `jobs.webhook_attempts` in all. A URL that breaks the rules
at the time of an attempt (the team lost its secret or the host, or the host now resolves
inside) is refused and dropped. With Redis a replica's restart or death loses nothing: what it
had claimed is claimed again once the lease has passed (at least once, as webhooks promise).

Each delivery ends counted once in `gateway_webhook_deliveries_total` as `delivered`, `failed`
or `refused`; each attempt that will be retried adds one `retried`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import time
from typing import Protocol

import orjson

from gateway.errors import InvalidRequest, StateUnavailable
from gateway.metrics import Metrics
from gateway.settings import JobsSettings, Settings, TeamSettings
from gateway.state.deliveries.base import Claimed, Deliveries
from gateway.state.deliveries.memory import MemoryDeliveries
from gateway.webhooks.rules import check_webhook_url, webhook_host
from gateway.webhooks.sender import Refused, Unanswered, WebhookSender
from gateway.webhooks.signing import signed_headers

log = logging.getLogger("gateway.webhooks")

OUTCOMES = ("delivered", "retried", "failed", "refused")
POLL_S = 1.0
"""How often a worker asks the state backend for due deliveries when nothing wakes it sooner."""
LEASE_MARGIN_S = 5.0
"""A claim outlives the attempt's timeout by this much before another worker may take it."""
MAX_SENDING = 32


class EndedJob(Protocol):
    """What a webhook needs of a job record."""

    @property
    def id(self) -> str: ...

    @property
    def team(self) -> str: ...

    @property
    def webhook_url(self) -> str | None: ...

    def public(self) -> dict[str, object]: ...


class Webhooks:
    """Queues ended jobs' webhooks and runs the delivery worker (under the supervisor)."""

    def __init__(self, settings: Settings, deliveries: Deliveries, metrics: Metrics) -> None:
        self.jobs: JobsSettings = settings.jobs
        self.teams: dict[str, TeamSettings] = {team.name: team for team in settings.teams}
        self.deliveries = deliveries
        self.metrics = metrics
        self.sender = WebhookSender(settings.teams, settings.jobs.webhook_timeout_s)
        self.owner = secrets.token_hex(8)
        # Deliveries the state backend could not take when their job ended: kept here, so
        # this replica still delivers them.
        self._local = MemoryDeliveries()
        self._wake = asyncio.Event()
        self._retries_due: list[float] = []
        self._sending: set[asyncio.Task[None]] = set()
        for team in settings.teams:  # every series from start-up, for dashboards and alerts
            for outcome in OUTCOMES:
                metrics.webhook_deliveries.labels(team=team.name, outcome=outcome).inc(0)

    async def job_ended(self, record: EndedJob) -> None:
        """Queue the job's webhook, if it asked for one (Jobs calls this when a job ends)."""
        if not record.webhook_url:
            return
        body = orjson.dumps(record.public())
        payload = orjson.dumps(
            {"team": record.team, "url": record.webhook_url, "body": body.decode()}
        )
        webhook_id = f"msg_{record.id}"
        try:
            await self.deliveries.delivery_add(webhook_id, payload)
        except StateUnavailable as exc:
            log.warning(
                "webhook queued on this replica only",
                extra={"team": record.team, "webhook_id": webhook_id, "error": str(exc)},
            )
            await self._local.delivery_add(webhook_id, payload)
        self._wake.set()

    async def run_forever(self) -> None:
        """Claim due deliveries and attempt each, until cancelled (then attempts stop too)."""
        me = asyncio.current_task()
        try:
            while True:
                for store in (self.deliveries, self._local):
                    for item in await self._claim(store):
                        self._start(store, item)
                await self._sleep()
                if me is not None and me.cancelling():
                    # redis-py can swallow a cancellation that lands while it takes a pooled
                    # connection; honour it here, or the worker would never stop.
                    raise asyncio.CancelledError
        finally:
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def _claim(self, store: Deliveries) -> list[Claimed]:
        free = MAX_SENDING - len(self._sending)
        lease_s = self.jobs.webhook_timeout_s + LEASE_MARGIN_S
        try:
            return await store.delivery_claim(self.owner, free, lease_s)
        except StateUnavailable as exc:
            log.warning("webhook deliveries cannot be claimed", extra={"error": str(exc)})
            return []

    async def _sleep(self) -> None:
        """Until POLL_S has passed, a job ended here, an attempt ended or a retry is due."""
        now = time.monotonic()
        while self._retries_due and self._retries_due[0] <= now:
            heapq.heappop(self._retries_due)
        wait_s = min(POLL_S, self._retries_due[0] - now) if self._retries_due else POLL_S
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and the worker would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._wake.wait()
        self._wake.clear()

    def _start(self, store: Deliveries, item: Claimed) -> None:
        task = asyncio.create_task(self._deliver(store, item), name=f"webhook {item.id}")
        self._sending.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()

    async def _deliver(self, store: Deliveries, item: Claimed) -> None:
        """One attempt, and what follows from it: done, retried later, or dropped."""
        job = orjson.loads(item.payload)
        team_name: str = job["team"]
        url: str = job["url"]
        context = {
            "team": team_name,
            "webhook_id": item.id,
            "host": webhook_host(url),
            "attempt": item.attempt,
        }
        try:
            outcome, detail = await self._attempt(team_name, url, item.id, job["body"].encode())
            if outcome == "retried" and item.attempt >= self.jobs.webhook_attempts:
                outcome = "failed"
            if outcome == "retried":
                delay_s = self.jobs.webhook_backoff_s * 2 ** (item.attempt - 1)
                await store.delivery_later(item.id, self.owner, delay_s)
                self._due_in(delay_s)
            else:
                await store.delivery_remove(item.id)
        except StateUnavailable as exc:
            # The claim's lease runs out and the delivery is attempted again.
            log.warning("webhook state not updated", extra={**context, "error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the others
            log.error("webhook delivery failed unexpectedly", exc_info=exc, extra=context)
            return
        self.metrics.webhook_deliveries.labels(team=team_name, outcome=outcome).inc()
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        log.log(level, "webhook attempt", extra={**context, "outcome": outcome, "detail": detail})

    async def _attempt(
        self, team_name: str, url: str, webhook_id: str, body: bytes
    ) -> tuple[str, str]:
        """(outcome, detail) of one POST: delivered, retried or refused."""
        team = self.teams.get(team_name)
        secret = team.webhook_secret() if team is not None else None
        try:
            if team is None or secret is None:
                return "refused", "the team no longer has a webhook secret"
            check_webhook_url(team, url, self.jobs)
            headers = signed_headers(secret, webhook_id, int(time.time()), body)
            status = await self.sender.post(team_name, url, headers, body)
        except InvalidRequest as exc:
            return "refused", exc.message
        except Refused as exc:
            return "refused", str(exc)
        except Unanswered as exc:
            return "retried", str(exc)
        if 200 <= status < 300:
            return "delivered", f"answered {status}"
        return "retried", f"answered {status}"

    def _due_in(self, delay_s: float) -> None:
        """Wake the worker when this retry falls due, if that is before the next poll."""
        heapq.heappush(self._retries_due, time.monotonic() + delay_s)
