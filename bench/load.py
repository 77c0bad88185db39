"""End-to-end load benchmark: the gateway on one core against the simulator in fast mode.

Starts the simulator (`--result-kib`, every result one incompressible PNG) and the gateway as
real processes on 127.0.0.1, the gateway pinned to core 0 and the simulator and load generator
to core 1, then reports per concurrency level requests/s and latency percentiles (wrk), the
latency added over calling the upstream directly (POST + result GET, what the gateway does),
an in-flight scale test behind a slow upstream, and the gateway's peak RSS. Everything is
bounded in time and stops by itself. `--workers 2` runs two gateway processes on that one
core with a private Redis for their shared state, the way a replica holds more connections
than one process's open-file limit allows.

    python -m bench.load [--duration 10] [--levels 1,16,64] [--inflight 2000] [--result-kib 1024]
                         [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx

from gateway.keys import hash_key
from tests.helpers import RedisServer, free_port, running

QUIET = subprocess.DEVNULL
INFLIGHT_TIMEOUT_S = 300
PROBLEM_METRICS = ("gateway_upstream_errors_total", "gateway_rehost_failures_total")
KEY = "sk-bench-0123456789"
SIM_KEYS = [f"bench-key-{i}" for i in range(8)]
BODY = {"model": "flux-2-pro", "prompt": "a lighthouse at dusk", "seed": 1}

WRK_POST = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def pinned(core: int, argv: list[str]) -> list[str]:
    return (["taskset", "-c", str(core)] if shutil.which("taskset") else []) + argv


def gateway_config(folder: Path, port: int, sim_port: int, redis_url: str | None) -> Path:
    config = folder / "gateway.toml"
    state = f'[state]\nbackend = "redis"\nredis_url = "{redis_url}"\n' if redis_url else ""
    config.write_text(
        f"""
[server]
port = {port}

{state}

[cache]
dir = "{folder / "images"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true

[[upstreams]]
name = "sim"
kind = "openai-images"
base_url = "http://127.0.0.1:{sim_port}/v1"
keys = {json.dumps(SIM_KEYS)}
models = ["flux-2-pro"]
max_concurrency_per_key = 100000
timeout_s = 120

[[teams]]
name = "bench"
key_hashes = ["{hash_key(KEY)}"]

[log]
level = "warning"
"""
    )
    return config


def peak_rss_mib(pid: int) -> float:
    """Peak RSS of a process and its children (the workers under `--workers N`), summed."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return peak + sum(peak_rss_mib(int(child)) for child in children)


def wrk(url: str, script: str, connections: int, duration: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "-- plain GET")
    threads = min(connections, 2)
    out = subprocess.run(
        pinned(
            1,
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "--timeout",
                "60s",
                "-s",
                lua.name,
                url,
            ],
        ),
        capture_output=True,
        text=True,
        timeout=duration + 120,
    ).stdout
    os.unlink(lua.name)
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}_ms"] = (
                value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
            )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


async def inflight(url: str, count: int) -> tuple[float, Counter[str]]:
    """`count` requests at once behind a slow upstream: wall time and failures by kind.

    The client is aiohttp (no per-request pool scan), one connection per request.
    """
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=INFLIGHT_TIMEOUT_S)
    headers = {"authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> str:
            async with session.post(
                f"{url}/v1/images/generations", json=BODY, headers=headers
            ) as response:
                body = await response.read()
                if response.status == 200:
                    return "ok"
                try:
                    message = json.loads(body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = body[:100].decode(errors="replace")
                return f"HTTP {response.status}: {message}"

        started = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        wall = time.perf_counter() - started
    failures = Counter(
        a if isinstance(a, str) else f"{type(a).__name__}: {a}" for a in answers if a != "ok"
    )
    return wall, failures


def logged_problems(log: Path) -> Counter[str]:
    """The gateway's warnings and errors so far, by message and error text."""
    problems: Counter[str] = Counter()
    for raw in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            problems[raw[:200]] += 1
            continue
        if isinstance(record, dict):
            message = record.get("message") or record.get("msg")
            problems[f"{record.get('level')}: {message} {record.get('error') or ''}".strip()] += 1
    return problems


def raise_file_limit(wanted: int) -> None:
    """Room for `wanted` sockets in this process and, inherited, in the sim and the gateway."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--inflight", default="2000")
    parser.add_argument("--slow-upstream-s", type=float, default=5.0)
    parser.add_argument("--result-kib", type=int, default=1024)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway worker processes, all on core 0 (more than 1 uses a private Redis)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    counts = [int(x) for x in args.inflight.split(",")]
    raise_file_limit(3 * max(counts) + 1024)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    body = json.dumps(BODY)
    report: dict[str, object] = {"levels": {}, "inflight": {}}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        redis = RedisServer(folder).start() if args.workers > 1 else None
        if redis is not None:
            stack.callback(redis.stop)
        sim_port, port = free_port(), free_port()
        sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
        sim_cmd = pinned(
            1,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "sim",
                "--port",
                str(sim_port),
                "--keys",
                ",".join(SIM_KEYS),
                "--result-kib",
                str(args.result_kib),
                "--max-active",
                "100000",
            ],
        )
        gw_cmd = pinned(
            0,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(gateway_config(folder, port, sim_port, redis and redis.url)),
                "--workers",
                str(args.workers),
            ],
        )
        with (
            running(sim_cmd, f"{sim_url}/_sim/stats", output=QUIET),
            open(folder / "gateway.log", "wb") as gw_log,
            running(gw_cmd, f"{gw_url}/healthz", output=gw_log.fileno()) as gw,
        ):
            result_url = httpx.post(
                f"{sim_url}/v1/images/generations",
                json=BODY,
                headers={"authorization": f"Bearer {SIM_KEYS[0]}"},
            ).json()["data"][0]["url"]
            for level in levels:
                post = wrk(
                    f"{sim_url}/v1/images/generations",
                    WRK_POST.format(key=SIM_KEYS[0], body=body),
                    level,
                    args.duration,
                )
                get = wrk(result_url, "", level, args.duration)
                through = wrk(
                    f"{gw_url}/v1/images/generations",
                    WRK_POST.format(key=KEY, body=body),
                    level,
                    args.duration,
                )
                httpx.delete(f"{sim_url}/_sim/requests")
                direct_p50 = post.get("p50_ms", 0) + get.get("p50_ms", 0)
                added = through.get("p50_ms", 0) - direct_p50
                report["levels"][str(level)] = {  # type: ignore[index]
                    "gateway": through,
                    "upstream_post": post,
                    "upstream_get": get,
                    "added_p50_ms": added,
                }
                gw_p = {k: through.get(k, 0.0) for k in ("p50_ms", "p90_ms", "p99_ms")}
                print(
                    f"c={level}: gateway {through['rps']:.0f} req/s, p50 {gw_p['p50_ms']:.1f} ms, "
                    f"p90 {gw_p['p90_ms']:.1f} ms, p99 {gw_p['p99_ms']:.1f} ms, "
                    f"errors {through['errors']:.0f} | upstream POST+GET p50 {direct_p50:.1f} ms "
                    f"({post['rps']:.0f} POST/s, {get['rps']:.0f} GET/s), "
                    f"added p50 {added:.1f} ms",
                    flush=True,
                )
            httpx.put(f"{sim_url}/_sim/faults", json={"latency": args.slow_upstream_s})
            for count in counts:
                wall, failures = asyncio.run(inflight(gw_url, count))
                httpx.delete(f"{sim_url}/_sim/requests")
                errors = sum(failures.values())
                report["inflight"][str(count)] = {  # type: ignore[index]
                    "wall_s": wall,
                    "errors": errors,
                    "error_kinds": dict(failures),
                }
                print(
                    f"in flight {count} behind a {args.slow_upstream_s:g} s upstream: "
                    f"{wall:.1f} s wall, {errors} errors",
                    flush=True,
                )
                for kind, times in failures.most_common(5):
                    print(f"    {times}x {kind}", flush=True)
                if errors:
                    for line, times in logged_problems(folder / "gateway.log").most_common(5):
                        print(f"    gateway log, {times}x: {line}", flush=True)
                    for line in httpx.get(f"{gw_url}/metrics").text.splitlines():
                        if line.startswith(PROBLEM_METRICS):
                            print(f"    {line}", flush=True)
            report["peak_rss_mib"] = peak_rss_mib(gw.pid)
            print(f"gateway peak RSS: {report['peak_rss_mib']:.0f} MiB", flush=True)
    Path("bench/results.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
