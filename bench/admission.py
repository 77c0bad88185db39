"""Admission benchmark: team admissions per second and Redis round trips per request.

Runs the real TeamLimiter (admit + settle, as every image request does) against the memory
backend and a private Redis server started here on a free port, from C concurrent tasks.

    python -m bench.admission [--requests 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis

from gateway.limits import TeamLimiter
from gateway.metrics import Metrics
from gateway.settings import TeamSettings
from gateway.state.base import State
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.helpers import RedisServer

PRICE_MICROS = 30_000
"""flux-2-pro at 1 MP: what each benchmarked request reserves and is charged."""
TEAM = TeamSettings(
    name="bench", rpm=10**9, max_concurrency=10**6, images_per_day=10**9, monthly_budget_usd=1e9
)


async def run(state: State, requests: int, concurrency: int) -> float:
    limiter = TeamLimiter(state, Metrics())
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            ticket = await limiter.admit(TEAM, f"r{i}", 1, PRICE_MICROS)
            await limiter.settle(ticket, 1, PRICE_MICROS)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


def round_trips(url: str) -> int:
    """Commands the client sent (script calls), not the commands scripts ran inside Redis."""
    stats = redis.Redis.from_url(url).info("commandstats")
    sent = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_script")
    return sum(int(stats[k]["calls"]) for k in sent if k in stats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(f"admit+settle, {args.requests} requests, {args.concurrency} concurrent tasks")
    rate = asyncio.run(run(MemoryState(), args.requests, args.concurrency))
    print(f"memory: {rate:,.0f} requests/s")
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder)).start()
        try:
            backend = RedisState(server.url)
            before = round_trips(server.url)
            rate = asyncio.run(run(backend, args.requests, args.concurrency))
            per_request = (round_trips(server.url) - before) / args.requests
            print(
                f"redis:  {rate:,.0f} requests/s, {per_request:.2f} Redis round trips per request "
                "(1 to admit, 1 to settle)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
