"""Resuming a BFL job another replica submitted: poll, rehost, deliver — never resubmit.

A job whose upstream or key is no longer configured here cannot be polled: it ends
`job_interrupted` (the key must not be guessed).
"""

from __future__ import annotations

import time

from gateway.cache import ImageMeta
from gateway.errors import JobInterrupted
from gateway.jobs.record import JobRecord
from gateway.pipeline import Delivered, ImagePipeline
from gateway.routing import Outcome, Router
from gateway.settings import TeamSettings
from gateway.upstreams.bfl import BflUpstream

INTERRUPTED = (
    "The gateway replica running this job stopped before it could be resumed; "
    "it cost nothing. Submit it again."
)


async def resume_bfl(
    pipeline: ImagePipeline, router: Router, record: JobRecord, team: TeamSettings
) -> Delivered:
    """The job's one image, from its stored polling URL with the key of the same fingerprint."""
    resume, settlement = record.resume, record.settlement
    assert resume is not None and settlement is not None
    route = next((r for r in router.routes if r.name == resume.upstream), None)
    if route is None or not isinstance(route.upstream, BflUpstream):
        raise JobInterrupted(INTERRUPTED)
    key = next((k for k in route.pool.keys if k.fingerprint == resume.key_fingerprint), None)
    if key is None:
        raise JobInterrupted(INTERRUPTED)
    left_s = max(0.0, resume.started + route.upstream.settings.timeout_s - time.time())
    started = time.perf_counter()
    result = await route.upstream.resume(
        resume.polling_url, key.key, settlement.prompt, resume.cost_micros, left_s
    )
    outcome = Outcome(result, route.name, key.fingerprint, time.perf_counter() - started)
    seed = settlement.seed if settlement.seed is not None else result.seed
    prompt = settlement.prompt if pipeline.settings.cache.keep_prompts else None
    meta = ImageMeta(team.name, record.model, record.request_id, route.name, seed, prompt)
    rehost_started = time.perf_counter()
    image = await pipeline.rehoster.rehost(result.url, meta)
    await pipeline.on_stored(image)
    return Delivered(image, outcome, seed, time.perf_counter() - rehost_started)
