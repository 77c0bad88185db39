"""End-to-end benchmark: the gateway on one core against the simulator in fast mode.

Starts the simulator (`--result-kib`, every result one incompressible PNG) and the gateway as
real processes on 127.0.0.1, the gateway pinned to core 0 and the simulator and load generator
to core 1, then reports, in one run:

- per concurrency level, rehosted POSTs: requests/s and latency percentiles (wrk), the latency
  added over calling the upstream directly (POST + result GET, what the gateway does), and the
  gateway's CPU per request (from /proc, so the per-core capacity is read whatever else runs);
- durable-link GETs at 16 concurrent against nginx serving the same cache folder (sendfile)
  and a bare Starlette app answering the same bytes from memory, each pinned to core 0 too;
- an in-flight scale test behind a slow upstream, with the gateway's peak RSS;
- big edits beside a stream of small requests (`bench.edits`), and the machine's floor
  (`bench.floor`).

Everything is bounded in time and stops by itself. The report is printed as Markdown and kept
in `bench/results.md` and `bench/results.json`. `--workers 2` runs two gateway processes on
that one core with a private Redis for their shared state.

    python -m bench.load [--duration 10] [--levels 1,16,64] [--inflight 2000] [--result-kib 1024]
                         [--workers 1] [--skip edits,floor]
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
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import floor
from gateway.keys import hash_key
from tests.helpers import RedisServer, free_port, running

QUIET = subprocess.DEVNULL
INFLIGHT_TIMEOUT_S = 300
LINK_CONCURRENCY = 16
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its children have used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return used + sum(cpu_s(int(child)) for child in children)


def wrk_on(pid: int, url: str, script: str, connections: int, duration: int) -> dict[str, float]:
    """`wrk`, plus the CPU the server `pid` spent per request (µs) and so its rate per core."""
    before = cpu_s(pid)
    result = wrk(url, script, connections, duration)
    served = result["rps"] * duration
    per_request = (cpu_s(pid) - before) / served if served else 0.0
    result["cpu_us"] = per_request * 1e6
    result["per_core_rps"] = 1 / per_request if per_request else 0.0
    return result


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


async def inflight(
    url: str, count: int, key: str = KEY, fetch: bool = False
) -> tuple[float, Counter[str]]:
    """`count` requests at once behind a slow upstream: wall time and failures by kind; with
    `fetch`, each answer's result link is fetched too (what the gateway does upstream).

    The client is aiohttp (no per-request pool scan), one connection per request.
    """
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=INFLIGHT_TIMEOUT_S)
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> str:
            async with session.post(
                f"{url}/v1/images/generations", json=BODY, headers=headers
            ) as response:
                body = await response.read()
                if response.status == 200 and fetch:
                    async with session.get(json.loads(body)["data"][0]["url"]) as result:
                        await result.read()
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


NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {folder}/nginx-body;
    proxy_temp_path {folder}/nginx-proxy;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx_get(folder: Path, cache_dir: Path, image_id: str, duration: int) -> dict[str, float]:
    """nginx serving the gateway's own cache folder (the image file under its shard), pinned to
    core 0 like the gateway, which is idle meanwhile."""
    port = free_port()
    conf = folder / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, folder=folder, port=port, root=cache_dir))
    url = f"http://127.0.0.1:{port}/{image_id[:2]}/{image_id}"
    command = pinned(0, ["nginx", "-c", str(conf), "-p", str(folder)])
    with running(command, url, output=QUIET) as server:
        return wrk_on(server.pid, url, "", LINK_CONCURRENCY, duration)


def bare_get(image: Path, duration: int) -> dict[str, float]:
    """A bare Starlette app on uvicorn answering the same bytes from memory (`bench.bare`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/images/bench.png"
    command = pinned(
        0,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    )
    with running(command, url, env={"BENCH_IMAGE": str(image)}, output=QUIET) as server:
        return wrk_on(server.pid, url, "", LINK_CONCURRENCY, duration)


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
    parser.add_argument("--skip", default="", help="comma-separated: links, edits, floor")
    parser.add_argument(
        "--perf", type=int, default=16, help="profile the gateway at this level (0: never)"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    levels = [int(x) for x in args.levels.split(",")]
    counts = [int(x) for x in args.inflight.split(",")]
    raise_file_limit(3 * max(counts) + 1024)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    report: dict[str, Any] = {"levels": {}, "inflight": {}, "links": {}}
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
            for level in levels:
                report["levels"][str(level)] = rehost_level(sim_url, gw_url, gw.pid, level, args)
            if "links" not in skip:
                report["links"] = links(folder, gw_url, gw.pid, args.duration)
            httpx.put(f"{sim_url}/_sim/faults", json={"latency": args.slow_upstream_s})
            for count in counts:
                report["inflight"][str(count)] = burst(folder, sim_url, gw_url, count, args)
            report["peak_rss_mib"] = peak_rss_mib(gw.pid)
            print(f"gateway peak RSS: {report['peak_rss_mib']:.0f} MiB", flush=True)
    if "edits" not in skip:
        from bench import edits

        report["edits"] = edits.run(args.duration)
    if "floor" not in skip:
        rows = floor.measure()
        report["floor"] = {"rows": rows, "images_per_s": floor.images_per_s(rows)}
    Path("bench/results.json").write_text(json.dumps(report, indent=2))
    markdown = summary(report, args)
    Path("bench/results.md").write_text(markdown)
    print(markdown)


def rehost_level(
    sim_url: str, gw_url: str, gw_pid: int, level: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Rehosted POSTs at one concurrency, beside the upstream's own POST and result GET."""
    body = json.dumps(BODY)
    result_url = httpx.post(
        f"{sim_url}/v1/images/generations",
        json=BODY,
        headers={"authorization": f"Bearer {SIM_KEYS[0]}"},
    ).json()["data"][0]["url"]
    post = wrk(
        f"{sim_url}/v1/images/generations",
        WRK_POST.format(key=SIM_KEYS[0], body=body),
        level,
        args.duration,
    )
    get = wrk(result_url, "", level, args.duration)
    with profiled(gw_pid, args.perf == level) as profile:
        through = wrk_on(
            gw_pid,
            f"{gw_url}/v1/images/generations",
            WRK_POST.format(key=KEY, body=body),
            level,
            args.duration,
        )
    httpx.delete(f"{sim_url}/_sim/requests")
    direct_p50 = post.get("p50_ms", 0) + get.get("p50_ms", 0)
    added = through.get("p50_ms", 0) - direct_p50
    gw_p = {k: through.get(k, 0.0) for k in ("p50_ms", "p90_ms", "p99_ms")}
    print(
        f"c={level}: gateway {through['rps']:.0f} req/s, p50 {gw_p['p50_ms']:.1f} ms, "
        f"p90 {gw_p['p90_ms']:.1f} ms, p99 {gw_p['p99_ms']:.1f} ms, "
        f"errors {through['errors']:.0f}, {through['cpu_us']:.0f} µs CPU/request | "
        f"upstream POST+GET p50 {direct_p50:.1f} ms "
        f"({post['rps']:.0f} POST/s, {get['rps']:.0f} GET/s), added p50 {added:.1f} ms",
        flush=True,
    )
    row = {"gateway": through, "upstream_post": post, "upstream_get": get, "added_p50_ms": added}
    if profile:
        row["profile"] = profile
        for name, share in profile.items():
            print(f"    {share:5.1f} %  {name}", flush=True)
    return row


@contextlib.contextmanager
def profiled(pid: int, wanted: bool) -> Iterator[dict[str, float]]:
    """`perf record` of the gateway while the block runs: its CPU split by library (kernel,
    CPython, OpenSSL's sha256, libc copies …), then the hottest symbols, in percent."""
    profile: dict[str, float] = {}
    if not wanted or shutil.which("perf") is None:
        yield profile
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        recorder = subprocess.Popen(
            ["perf", "record", "-F", "499", "-p", str(pid), "-o", str(data)],
            stdout=QUIET,
            stderr=QUIET,
        )
        try:
            yield profile
        finally:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
        for sort, top in (("dso", 6), ("sym", 12)):
            report = subprocess.run(
                ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio"],
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
            rows = re.findall(r"^\s+([\d.]+)%\s+(.+?)\s*$", report, re.MULTILINE)
            for share, name in rows[:top]:
                profile[f"{sort}: {name}"] = float(share)


def links(folder: Path, gw_url: str, gw_pid: int, duration: int) -> dict[str, Any]:
    """Durable-link GETs of a fresh 1 MiB image: the gateway, nginx on its cache folder (when
    installed) and a bare Starlette app, one after the other on core 0."""
    link = httpx.post(
        f"{gw_url}/v1/images/generations",
        json=BODY,
        headers={"authorization": f"Bearer {KEY}"},
        timeout=60,
    ).json()["data"][0]["url"]
    image_id = link.rsplit("/", 1)[1].split(".")[0]
    cache_dir = folder / "images"
    stored = cache_dir / image_id[:2] / image_id
    rows: dict[str, Any] = {"gateway": wrk_on(gw_pid, link, "", LINK_CONCURRENCY, duration)}
    if shutil.which("nginx"):
        rows["nginx"] = nginx_get(folder, cache_dir, image_id, duration)
    rows["bare starlette"] = bare_get(stored, duration)
    for name, row in rows.items():
        print(
            f"GET of a durable link, c={LINK_CONCURRENCY}, {name}: {row['rps']:.0f} req/s, "
            f"p50 {row.get('p50_ms', 0):.2f} ms, {row['cpu_us']:.0f} µs CPU/request",
            flush=True,
        )
    return rows


def burst(
    folder: Path, sim_url: str, gw_url: str, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    """`count` requests at once behind the slow upstream, then the same straight at it."""
    wall, failures = asyncio.run(inflight(gw_url, count))
    httpx.delete(f"{sim_url}/_sim/requests")
    alone, _ = asyncio.run(inflight(sim_url, count, SIM_KEYS[0], fetch=True))
    httpx.delete(f"{sim_url}/_sim/requests")
    errors = sum(failures.values())
    print(
        f"in flight {count} behind a {args.slow_upstream_s:g} s upstream: "
        f"{wall:.1f} s wall, {errors} errors | the upstream alone (POST + result GET) "
        f"{alone:.1f} s",
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
    return {"wall_s": wall, "errors": errors, "error_kinds": dict(failures), "alone_s": alone}


def summary(report: dict[str, Any], args: argparse.Namespace) -> str:
    """The report's rows against the targets of issue 18, as a Markdown table."""
    lines = [
        "| path | flux-gateway | reference in the same run | target |",
        "|---|---|---|---|",
    ]
    link_rows = report.get("links") or {}
    if link_rows:
        gateway = link_rows["gateway"]
        refs = ", ".join(
            f"{name} {row['rps']:,.0f} req/s, p50 {row.get('p50_ms', 0):.2f} ms "
            f"({row['cpu_us']:.0f} µs CPU each)"
            for name, row in link_rows.items()
            if name != "gateway"
        )
        lines.append(
            f"| `GET` of a durable link, {LINK_CONCURRENCY} concurrent | "
            f"{gateway['rps']:,.0f} req/s, p50 {gateway.get('p50_ms', 0):.2f} ms "
            f"({gateway['cpu_us']:.0f} µs CPU each: {gateway['per_core_rps']:,.0f}/s per core) "
            f"| {refs} | ≥ 2,800 req/s, p50 ≤ 6 ms |"
        )
    levels = report["levels"]
    top = levels.get("64")
    if top:
        gateway = top["gateway"]
        lines.append(
            f"| `POST` generation with rehost, 64 concurrent | {gateway['rps']:,.0f} req/s "
            f"({gateway['cpu_us']:,.0f} µs CPU each: {gateway['per_core_rps']:,.0f}/s per core) "
            f"| the upstream alone: {top['upstream_post']['rps']:,.0f} POST/s, "
            f"{top['upstream_get']['rps']:,.0f} result GET/s | ≥ 600 req/s |"
        )
    mid = levels.get("16")
    if mid:
        lines.append(
            f"| added p50 at 16 concurrent | +{mid['added_p50_ms']:.1f} ms "
            f"(p50 {mid['gateway'].get('p50_ms', 0):.1f} ms) | upstream POST + GET p50 "
            f"{mid['upstream_post'].get('p50_ms', 0) + mid['upstream_get'].get('p50_ms', 0):.1f}"
            " ms | ≤ +10 ms |"
        )
    for count, row in report["inflight"].items():
        lines.append(
            f"| {int(count):,} in flight behind a {args.slow_upstream_s:g} s upstream | "
            f"{row['wall_s']:.1f} s wall, {row['errors']} errors, peak RSS "
            f"{report['peak_rss_mib']:.0f} MiB | the upstream alone (POST + result GET) "
            f"{row['alone_s']:.1f} s | ≤ 8 s, ≤ 250 MiB |"
        )
    edit = report.get("edits")
    if edit:
        alone, busy = edit["small_alone"]["p99_ms"], edit["small_with_edits"]["p99_ms"]
        control = edit["upstream_alone"]["p99_ms"], edit["upstream_with_edits"]["p99_ms"]
        lines.append(
            f"| small requests' p99 beside {edit['edits_per_s']:g} edits/s of 8 × 2 MB data URLs "
            f"| {busy:.1f} ms ({busy / alone:.2f}× the {alone:.1f} ms without them) "
            f"| the upstream exchange alone, same windows: p99 {control[0]:.1f} → "
            f"{control[1]:.1f} ms ({control[1] / control[0]:.2f}×) | ≤ 1.5× |"
        )
        big = edit["big_in_flight"]
        lines.append(
            f"| {big['requests']} requests of {big['body_mib']:.0f} MiB (`max_body_mb`) in flight "
            f"| peak RSS {big['peak_rss_mib']:,.0f} MiB ({big['rss_mib_while_held']:,.0f} MiB "
            f"while all are held upstream) | {big['requests'] * big['body_mib']:,.0f} MiB of "
            "bodies | bounded |"
        )
    fl = report.get("floor")
    if fl:
        rows = fl["rows"]
        lines.append(
            "| the machine's floor per 1 MiB image (`bench.floor`) | "
            + "; ".join(f"{name} {cpu_ms:.2f} ms CPU" for name, (cpu_ms, _) in rows.items())
            + f" | at most {fl['images_per_s']:,.0f} images/s on one core before any gateway "
            "code | |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
