"""`Jobs`: async image jobs run in the background, kept in the state, resumed after a crash.

A job is admitted like a synchronous request, then runs here: the same pipeline, the same
settlement, and the same answer body, stored as the job's `result`. While it runs this
replica holds its lease in the state and renews it; every replica scans for leases that ran
out (their replica died) and claims one job at a time, atomically, so two replicas never both
take one over. A BFL job whose polling URL was stored is resumed by polling that URL with the
same key; any other is ended `failed` / `job_interrupted` and its reservation given back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from gateway import usage
from gateway.answer import image_body
from gateway.catalog import MODELS
from gateway.errors import GatewayError, JobInterrupted, ServerError
from gateway.idempotency import Idempotency
from gateway.jobs import accepted
from gateway.jobs.record import JobRecord, Resume, Settlement, new_job_id
from gateway.jobs.resume import INTERRUPTED, resume_bfl
from gateway.jobs.run import JobRun
from gateway.limits import Ticket
from gateway.metrics import Metrics
from gateway.pipeline import Delivered, ImagePipeline, JobPlan
from gateway.routing import Router
from gateway.settings import TeamSettings
from gateway.state.admission.base import Counters, Reservation
from gateway.state.holds import BackendName
from gateway.state.jobs.base import JobStore
from gateway.state.records.base import UsageCounts
from gateway.usage import Usage

log = logging.getLogger("gateway.jobs")

SCAN_BATCH = 16
IDEMPOTENT_JOB = "image.job"
"""The `object` of what an Idempotency-Key stores for an async request: the job's id."""

OnEnd = Callable[[JobRecord], Awaitable[None]]
Work = Callable[[], Awaitable[list[Delivered]]]
Page = tuple[list[JobRecord], bool]
"""A page of a team's jobs and whether more follow (module level: `Jobs.list` shadows list)."""


async def nothing_on_end(record: JobRecord) -> None:
    """The default `on_end`: no webhooks configured."""


class Jobs:
    def __init__(
        self,
        store: JobStore,
        pipeline: ImagePipeline,
        router: Router,
        idempotency: Idempotency,
        usage_counts: UsageCounts,
        metrics: Metrics,
        teams: dict[str, TeamSettings],
        *,
        lease_s: float,
        retention_s: float,
        on_end: OnEnd = nothing_on_end,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.router = router
        self.idempotency = idempotency
        self.usage_counts = usage_counts
        self.metrics = metrics
        self.teams = teams
        self.lease_s = lease_s
        self.retention_s = retention_s
        self.on_end = on_end
        self.owner = secrets.token_hex(8)
        """This replica, as lease holder: a restarted process is a new owner."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, JobRecord] = {}

    async def submit(
        self,
        *,
        team: TeamSettings,
        request_id: str,
        run: JobRun,
        webhook_url: str | None,
        idempotency_name: str | None,
    ) -> JobRecord:
        """Store a queued job leased to this replica and start it; admission already passed."""
        body = run.parsed.body
        ticket = run.ticket
        record = JobRecord(
            new_job_id(),
            team.name,
            run.spec.id,
            request_id,
            int(time.time()),
            webhook_url=webhook_url,
            settlement=Settlement(
                (
                    ticket.reservation.names.team,
                    ticket.reservation.names.day,
                    ticket.reservation.names.month,
                ),
                ticket.reservation.backend,
                ticket.images,
                ticket.reserved_micros,
                run.plan.bound_micros,
                run.plan.input_mp,
                run.response_format,
                body.n,
                body.seed,
                body.prompt,
            ),
        )
        try:
            await self.store.job_create(
                record.id, team.name, time.time(), record.dumps(), self.owner, self.lease_s
            )
        except BaseException:
            await self.pipeline.settle(ticket, run.spec, run.plan, [])
            raise
        if idempotency_name is not None:
            marker = {"object": IDEMPOTENT_JOB, "id": record.id, "data": []}
            await self.idempotency.finish(idempotency_name, marker, {}, [])
        self._start(record, self._run_local(record, run))
        return record

    async def get(self, team: str, job_id: str) -> JobRecord | None:
        """The job if it is `team`'s; another team's job is as unknown as a missing one."""
        raw = await self.store.job_get(job_id)
        if raw is None:
            return None
        record = JobRecord.loads(raw)
        return record if record.team == team else None

    async def list(self, team: str, limit: int, after: str | None) -> Page:
        """The team's jobs newest first, after the job `after` (its id); and whether more."""
        before: float | None = None
        if after is not None:
            before = await self.store.job_score(team, after)
            if before is None:
                return [], False
        page = await self.store.job_page(team, before, limit + 1)
        records = [JobRecord.loads(raw) for raw, _ in page]
        return records[:limit], len(records) > limit

    async def replayed(self, team: str, body: dict[str, object]) -> JobRecord | None:
        """The job an Idempotency-Key replay names, if what it stored was a job."""
        job_id = body.get("id")
        if body.get("object") != IDEMPOTENT_JOB or not isinstance(job_id, str):
            return None
        return await self.get(team, job_id)

    def _start(self, record: JobRecord, work: Awaitable[None]) -> None:
        async def tracked() -> None:
            try:
                await work
            finally:
                self._tasks.pop(record.id, None)
                self._live.pop(record.id, None)
                self._count_live()

        self._live[record.id] = record
        self._count_live()
        self._tasks[record.id] = asyncio.create_task(tracked(), name=f"job {record.id}")

    def _count_live(self) -> None:
        """`gateway_jobs{status}` for queued and running: the jobs this replica runs now."""
        for status in ("queued", "running"):
            live = sum(1 for r in self._live.values() if r.status == status)
            self.metrics.jobs.labels(status=status).set(live)

    async def _running(self, record: JobRecord) -> None:
        record.status = "running"
        self._count_live()
        await self._update(record)

    async def _run_local(self, record: JobRecord, run: JobRun) -> None:
        """Run a job submitted here, as the synchronous handler would, and end it."""

        async def hear(report: accepted.Accepted) -> None:
            if run.parsed.body.n == 1:
                record.resume = Resume(
                    report.upstream,
                    report.key_fingerprint,
                    report.polling_url,
                    report.cost_micros,
                    time.time(),
                )
                await self._update(record)

        async def generate() -> list[Delivered]:
            await self._running(record)
            team = run.ticket.team
            self.metrics.inflight.labels(team=team.name).inc()
            token = accepted.listener.set(hear)
            try:
                return await self.pipeline.generate(
                    run.parsed, run.spec, run.candidates, team, record.request_id
                )
            finally:
                accepted.listener.reset(token)
                self.metrics.inflight.labels(team=team.name).dec()

        await self._conclude(record, run.ticket, run.plan, generate)

    async def _conclude(
        self,
        record: JobRecord,
        ticket: Ticket,
        plan: JobPlan,
        work: Work,
    ) -> None:
        """Run the job's work, settle its reservation, store how it ended, and tell `on_end`."""
        spec = MODELS[record.model]
        assert record.settlement is not None
        used = Usage()
        delivered: list[Delivered] = []
        try:
            delivered = await work()
        except asyncio.CancelledError:
            # Shutting down: a job the upstream accepted is resumed by whoever comes next.
            if record.resume is None:
                await self._fail(record, ticket, plan, JobInterrupted(INTERRUPTED), used)
            raise
        except GatewayError as exc:
            used.rate_limited = exc.status == 429
            await self._fail(record, ticket, plan, exc, used)
            return
        except Exception as exc:  # noqa: BLE001 - a job's bug must end the job, not vanish
            log.error("job failed unexpectedly", exc_info=exc, extra={"job": record.id})
            error = ServerError("The gateway failed unexpectedly; the error was logged.")
            await self._fail(record, ticket, plan, error, used)
            return
        body = await image_body(self.pipeline, delivered, record.settlement.response_format)
        record.succeed(body, time.time())
        if await self._end(record):
            used.spend_micros = await self.pipeline.settle(ticket, spec, plan, delivered)
            used.images = len(delivered)
            await self._ended(record, used)

    async def _fail(
        self, record: JobRecord, ticket: Ticket, plan: JobPlan, error: GatewayError, used: Usage
    ) -> None:
        record.fail(error, time.time())
        used.error = True
        if await self._end(record):
            await self.pipeline.settle(ticket, MODELS[record.model], plan, [])
            await self._ended(record, used)

    async def _update(self, record: JobRecord) -> None:
        """Store a running job's progress; a state outage only delays what readers see."""
        try:
            await self.store.job_update(record.id, record.dumps(), self.owner)
        except GatewayError as exc:
            log.warning("job progress not stored", extra={"job": record.id, "error": str(exc)})

    async def _end(self, record: JobRecord) -> bool:
        """Store the final record if this replica still holds the job (else another took it
        over and ends it; this one must not settle it twice)."""
        try:
            held = await self.store.job_end(record.id, record.dumps(), self.owner, self.retention_s)
        except GatewayError as exc:
            log.error("job end not stored", extra={"job": record.id, "error": str(exc)})
            return False
        if not held:
            log.warning(
                "job taken over elsewhere; its end here is dropped", extra={"job": record.id}
            )
        return held

    async def _ended(self, record: JobRecord, used: Usage) -> None:
        """Count, record usage, and tell `on_end` (webhooks) once the end is stored."""
        self.metrics.jobs.labels(status=record.status).inc()
        await usage.record(self.usage_counts, record.team, used)
        try:
            await self.on_end(record)
        except Exception as exc:  # noqa: BLE001 - a webhook's trouble never undoes a job
            log.error("job end callback failed", exc_info=exc, extra={"job": record.id})

    async def run_forever(self) -> None:
        """Renew this replica's leases and take over jobs whose lease ran out (supervised)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.renew()
            await self.take_over_expired()

    async def renew(self) -> None:
        """Extend the leases of jobs running here. A lost lease (this replica stalled past it)
        is logged; the job may finish here, but only the holder stores its end and settles."""
        if not self._tasks:
            return
        lost = await self.store.job_renew(list(self._tasks), self.owner, self.lease_s)
        for job_id in lost:
            log.warning("job lease lost; another replica runs it", extra={"job": job_id})

    async def take_over_expired(self) -> int:
        """Claim and finish jobs whose replica died; how many this replica took."""
        taken = 0
        for job_id in await self.store.job_expired(SCAN_BATCH):
            if job_id in self._tasks or not await self.store.job_claim(
                job_id, self.owner, self.lease_s
            ):
                continue
            raw = await self.store.job_get(job_id)
            if raw is None:
                continue
            record = JobRecord.loads(raw)
            if record.ended or record.settlement is None or record.team not in self.teams:
                continue
            taken += 1
            self._start(record, self._resume(record))
        return taken

    async def _resume(self, record: JobRecord) -> None:
        """Finish a dead replica's job: resume a stored BFL poll, else end it interrupted."""
        settlement = record.settlement
        assert settlement is not None
        team = self.teams[record.team]
        names = Counters(*settlement.team_counters)
        ticket = Ticket(
            team,
            record.request_id,
            Reservation(names, record.request_id, _backend(settlement.reservation_backend)),
            settlement.images,
            settlement.reserved_micros,
        )
        self.pipeline.limiter.adopt(ticket)
        plan = JobPlan(settlement.bound_micros, settlement.input_mp)
        log.info("job taken over", extra={"job": record.id, "resumable": bool(record.resume)})

        async def work() -> list[Delivered]:
            if record.resume is None or settlement.n != 1:
                raise JobInterrupted(INTERRUPTED)
            await self._running(record)
            return [await resume_bfl(self.pipeline, self.router, record, team)]

        await self._conclude(record, ticket, plan, work)

    async def aclose(self) -> None:
        """Stop the jobs running here (shutdown): resumable ones are left for a takeover."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _backend(name: str) -> BackendName:
    return "redis" if name == "redis" else "memory"
