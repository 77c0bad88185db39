"""Big edits beside small requests: do 8 × 2 MB data-URL references stall the rest?

The gateway runs pinned to core 0; the simulator (fast mode, small results), the load and an
upstream sink run on core 1. A stream of small text-to-image requests runs at a fixed rate
(open loop: each latency counts from its scheduled start, so a stall shows instead of slowing
the load down), while edits run at a fixed rate in every other window of `WINDOW_S` seconds:
the small requests of the edit windows and of the quiet windows (after the edits in flight
have ended) give the two sets of figures, taken side by side over the same time, so that the
noise of a shared machine falls on both alike. Each edit is a JSON `POST /v1/images/edits`
with `input_image` … `input_image_8` as data URLs of incompressible PNGs (random pixels, made
once). Edits go to a model served by the sink, a tiny upstream in a low-priority process of its
own that reads and drops each body and answers with a small image, so the edits cost core 1
only their sending, not a second decoding. Then 10 edits of about `server.max_body_mb` are
sent at once and held at the sink, so that the gateway's RSS is read with 10 such requests
truly in flight (the bench raises `max_inflight_body_mb` so that all 10 fit). Everything is
bounded in time and stops by itself; the report goes to stdout and `bench/edits.json`.

    python -m bench.edits [--duration 10] [--rate 100] [--edits-per-s 4] [--big 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from bench.load import (
    BODY,
    KEY,
    QUIET,
    SIM_KEYS,
    free_port,
    gateway_config,
    peak_rss_mib,
    pinned,
    running,
)
from gateway.catalog import REFERENCE_KEYS
from gateway.media import to_data_url
from gateway.settings import ServerSettings

MIB = 1024 * 1024
SMALL_RESULT_KIB = 64
REFERENCE_BYTES = 2 * MIB
MAX_REFERENCE_BYTES = 20 * MIB
EDIT_MODEL = "flux-2-max"
SINK_KEY = "sink-key"
WINDOW_S = 2.0
SETTLE_S = 0.5
"""A quiet window's first half second is not counted: edits sent last may still run."""
START_S = 0.2
HOLD_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 120
SLACK_BYTES = 64 * 1024
"""Room under `max_body_mb` for the JSON around the references of the big requests."""
AUTH = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

SINK_UPSTREAM = """
[[upstreams]]
name = "sink"
kind = "openai-images"
base_url = "http://127.0.0.1:{port}/v1"
keys = ["{key}"]
models = ["{model}"]
max_concurrency_per_key = 100000
timeout_s = {timeout}
"""

Timed = list[tuple[float, float]]
"""(scheduled start on the monotonic clock, latency in seconds) of each answered request."""


def random_png(approx_bytes: int) -> bytes:
    """A real PNG of random pixels (incompressible), about `approx_bytes` long."""
    side = max(1, int(math.sqrt(approx_bytes / 3)))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def edit_body(references: list[bytes], prompt: str) -> bytes:
    """A JSON edit with one data-URL reference per image, as `input_image` … keys."""
    body: dict[str, Any] = {"model": EDIT_MODEL, "prompt": prompt}
    for key, data in zip(REFERENCE_KEYS, references, strict=False):
        body[key] = to_data_url(data, "image/png")
    return json.dumps(body).encode()


def write_inputs(folder: Path, max_body_mb: float) -> None:
    """The bodies, made once: 8 distinct 2 MB PNGs, and one body of about `max_body_mb`."""
    references = [random_png(REFERENCE_BYTES) for _ in REFERENCE_KEYS]
    (folder / "edit.json").write_bytes(edit_body(references, "combine them"))
    per_reference = (int(max_body_mb * MIB) - SLACK_BYTES) // len(REFERENCE_KEYS) * 3 // 4
    big = random_png(min(per_reference, MAX_REFERENCE_BYTES) - 1024)
    (folder / "big.json").write_bytes(edit_body([big] * len(REFERENCE_KEYS), "combine big"))
    (folder / "result.png").write_bytes(random_png(SMALL_RESULT_KIB * 1024))


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile in ms of latencies in seconds; 0 when there are none."""
    if not values:
        return 0.0
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, math.ceil(pct / 100 * len(ranked)) - 1))] * 1000


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=0.0) * 1000,
    }


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


Call = Callable[[aiohttp.ClientSession], Awaitable[int]]
"""One request (or exchange) of a stream: its final status."""


def post(url: str, body: bytes) -> Call:
    async def call(session: aiohttp.ClientSession) -> int:
        async with session.post(url, data=body, headers=AUTH) as response:
            await response.read()
            return response.status

    return call


def upstream_exchange(sim_url: str) -> Call:
    """What the gateway does upstream for one small request: the simulator's POST, then the
    GET of its result link. Called directly, it shows what core 1 alone adds."""
    headers = {"authorization": f"Bearer {SIM_KEYS[0]}"}

    async def call(session: aiohttp.ClientSession) -> int:
        url = f"{sim_url}/v1/images/generations"
        async with session.post(url, json=BODY, headers=headers) as response:
            answer = await response.json()
            if response.status != 200:
                return response.status
        async with session.get(answer["data"][0]["url"]) as response:
            await response.read()
            return response.status

    return call


async def open_loop(call: Call, starts: list[float]) -> tuple[Timed, Counter[str]]:
    """`call` at each of `starts` (monotonic clock): the answered ones, and the errors."""
    timed: Timed = []
    errors: Counter[str] = Counter()

    async def one(session: aiohttp.ClientSession, scheduled: float) -> None:
        try:
            status = await call(session)
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[type(exc).__name__] += 1
            return
        if status == 200:
            timed.append((scheduled, time.monotonic() - scheduled))
        else:
            errors[f"HTTP {status}"] += 1

    async with client_session() as session:
        tasks: list[asyncio.Task[None]] = []
        for scheduled in starts:
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            tasks.append(asyncio.create_task(one(session, scheduled)))
        await asyncio.gather(*tasks)
    return timed, errors


def every(rate: float, start: float, stop: float) -> list[float]:
    return [start + i / rate for i in range(int((stop - start) * rate))]


class Sink:
    """The edits' upstream: reads and drops each body, answers a link to its own small image.

    With `hold`, each request waits at the sink until `release` is set, so the gateway has
    them all in flight at once."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.arrived = 0
        self.hold = False
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def generations(self, request: web.Request) -> web.Response:
        async for _ in request.content.iter_any():
            pass
        self.arrived += 1
        self.changed.set()
        if self.hold:
            await self.release.wait()
        url = f"http://{request.host}/results/{self.arrived}.png"
        return web.json_response({"created": int(time.time()), "data": [{"url": url}]})

    async def result(self, request: web.Request) -> web.Response:
        return web.Response(body=self.image, content_type="image/png")

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application(client_max_size=0)
        app.router.add_post("/v1/images/generations", self.generations)
        app.router.add_get("/results/{name}", self.result)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


def rss_mib(pid: int) -> float:
    """Current RSS of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times() -> dict[str, tuple[int, int]]:
    """Per core, (busy, total) clock ticks so far, from /proc/stat."""
    times: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(tick) for tick in ticks]
            idle = values[3] + values[4]  # idle and iowait
            times[name] = (sum(values) - idle, sum(values))
    return times


def core_busy_pct(before: dict[str, tuple[int, int]]) -> dict[str, float]:
    """How busy each core was since `before` (every process, not only the benchmark's)."""
    now = core_times()
    return {
        core: 100 * (now[core][0] - busy) / max(1, now[core][1] - total)
        for core, (busy, total) in before.items()
    }


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM again from the current RSS (Linux `clear_refs` 5), so the next peak read is
    of the phase that follows; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def side_edits(port: int, gw_url: str, folder: Path, orders: Connection) -> dict[str, Any]:
    """Serve as the sink; once it listens, take the edits' start times and send them."""
    sink = Sink((folder / "result.png").read_bytes())
    runner = await sink.start(port)
    body = (folder / "edit.json").read_bytes()
    orders.send("ready")
    try:
        timed, errors = await open_loop(post(f"{gw_url}/v1/images/edits", body), orders.recv())
    finally:
        await runner.cleanup()
    figures = latency_figures([latency for _, latency in timed])
    return figures | {"errors": dict(errors), "body_mib": len(body) / MIB}


async def side_big(port: int, gw_url: str, folder: Path, count: int, gw_pid: int) -> dict[str, Any]:
    """`count` big edits at once, held at the sink until all are there (or answered)."""
    sink = Sink((folder / "result.png").read_bytes())
    sink.hold = True
    runner = await sink.start(port)
    body = (folder / "big.json").read_bytes()
    statuses: Counter[str] = Counter()
    answered = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        try:
            async with session.post(f"{gw_url}/v1/images/edits", data=body, headers=AUTH) as r:
                await r.read()
                statuses[f"HTTP {r.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            answered += 1
            sink.changed.set()

    try:
        async with client_session() as session:
            tasks = [asyncio.create_task(one(session)) for _ in range(count)]
            deadline = time.monotonic() + HOLD_TIMEOUT_S
            while sink.arrived + answered < count and time.monotonic() < deadline:
                sink.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sink.changed.wait(), deadline - time.monotonic())
            held, held_rss = sink.arrived, rss_mib(gw_pid)
            sink.release.set()
            await asyncio.gather(*tasks)
    finally:
        await runner.cleanup()
    return {
        "requests": count,
        "body_mib": len(body) / MIB,
        "held_at_upstream": held,
        "rss_mib_while_held": held_rss,
        "statuses": dict(statuses),
    }


def side(command: str, args: tuple[Any, ...], answer: Connection) -> None:
    """The edits' process (load and sink), away from the small stream's client loop, and at
    the lowest priority: its bursts (22 MB out and in per edit) must not delay the simulator's
    answers to the small stream on the same core, or the figures would be of core 1."""
    os.nice(19)
    if command == "edits":
        result = asyncio.run(side_edits(*args, answer))
    else:
        result = asyncio.run(side_big(*args))
    answer.send(result)


@contextlib.contextmanager
def on_side(command: str, *args: Any) -> Iterator[Connection]:
    """`side(command, args)` running in a process of its own, and the pipe to it."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    process = context.Process(target=side, args=(command, args, theirs), daemon=True)
    process.start()
    try:
        yield mine
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def answer(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError("the side process did not answer in time")
    return pipe.recv()


Span = tuple[float, float]


async def core_use(spans: list[Span]) -> list[dict[str, tuple[int, int]]]:
    """`core_times()` at the start and end of each span (monotonic clock)."""
    marks = []
    for begin, end in spans:
        for at in (begin, end):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            marks.append(core_times())
    return marks


def busy_pct(marks: list[dict[str, tuple[int, int]]]) -> dict[str, float]:
    """How busy each core was over the spans `core_use` marked, all processes together."""
    pairs = list(zip(marks[::2], marks[1::2], strict=True))
    return {
        core: 100
        * sum(end[core][0] - begin[core][0] for begin, end in pairs)
        / max(1, sum(end[core][1] - begin[core][1] for begin, end in pairs))
        for core in marks[0]
    }


async def streams(
    gw_url: str, sim_url: str, rate: float, busy: list[Span], quiet: list[Span]
) -> tuple[Any, ...]:
    """The small stream through the gateway, beside it at half the rate its upstream exchange
    alone, and how busy the cores were in either kind of window."""
    start, stop = busy[0][0], quiet[-1][1]
    small = post(f"{gw_url}/v1/images/generations", json.dumps(BODY).encode())
    return await asyncio.gather(
        open_loop(small, every(rate, start, stop)),
        open_loop(upstream_exchange(sim_url), every(rate / 2, start + 0.5 / rate, stop)),
        core_use(busy),
        core_use(quiet),
    )


def side_by_side(
    ports: tuple[int, int, int], folder: Path, rate: float, edits_per_s: float, duration: int
) -> dict[str, Any]:
    """The small stream through windows with and without edits: figures of both kinds."""
    sim_port, port, sink_port = ports
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    with on_side("edits", sink_port, gw_url, folder) as pipe:
        answer(pipe, HOLD_TIMEOUT_S)  # the sink listens
        start = time.monotonic() + START_S
        windows = max(1, math.ceil(duration / WINDOW_S))
        busy = [(start + 2 * i * WINDOW_S, start + (2 * i + 1) * WINDOW_S) for i in range(windows)]
        quiet = [(end + SETTLE_S, end + WINDOW_S) for _, end in busy]
        pipe.send([at for begin, end in busy for at in every(edits_per_s, begin, end)])
        gateway, upstream, busy_cores, quiet_cores = asyncio.run(
            streams(gw_url, sim_url, rate, busy, quiet)
        )
        edits: dict[str, Any] = answer(pipe, REQUEST_TIMEOUT_S)

    def within(timed: Timed, spans: list[Span]) -> dict[str, Any]:
        return latency_figures(
            [lat for at, lat in timed if any(begin <= at < end for begin, end in spans)]
        )

    return {
        "small_alone": within(gateway[0], quiet) | {"core_busy_pct": busy_pct(quiet_cores)},
        "small_with_edits": within(gateway[0], busy) | {"core_busy_pct": busy_pct(busy_cores)},
        "small_errors": dict(gateway[1]),
        "upstream_alone": within(upstream[0], quiet),
        "upstream_with_edits": within(upstream[0], busy),
        "edits": edits,
    }


def run(
    duration: int = 10, rate: float = 100, edits_per_s: float = 4, big: int = 10
) -> dict[str, Any]:
    """A fresh gateway, `duration` s of each kind of window, then the big requests; the
    figures as `bench/edits.json` has them."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sim_port, port, sink_port = free_port(), free_port(), free_port()
        sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
        config = gateway_config(folder, port, sim_port, None)
        max_body_mb = ServerSettings().max_body_mb
        sink = SINK_UPSTREAM.format(
            port=sink_port, key=SINK_KEY, model=EDIT_MODEL, timeout=REQUEST_TIMEOUT_S
        )
        config.write_text(config.read_text() + sink)
        write_inputs(folder, max_body_mb)
        sim_cmd = pinned(
            1,
            [
                *(sys.executable, "-m", "gateway.cli", "sim", "--port", str(sim_port)),
                *("--result-kib", str(SMALL_RESULT_KIB), "--max-active", "100000"),
            ],
        )
        gw_cmd = pinned(0, [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)])
        budget = {"GATEWAY_SERVER__MAX_INFLIGHT_BODY_MB": str(max_body_mb * (big + 1))}
        with (
            running(sim_cmd, f"{sim_url}/_sim/stats", output=QUIET),
            open(folder / "gateway.log", "wb") as gw_log,
            running(gw_cmd, f"{gw_url}/healthz", budget, output=gw_log.fileno()) as gw,
        ):
            ports = (sim_port, port, sink_port)
            side_by_side(ports, folder, rate, edits_per_s, 2)  # warm-up
            started, cores = cpu_s(gw.pid), core_times()
            figures = side_by_side(ports, folder, rate, edits_per_s, duration)
            elapsed = 2 * math.ceil(duration / WINDOW_S) * WINDOW_S
            figures["gateway_cpu_pct"] = (cpu_s(gw.pid) - started) * 100 / elapsed
            figures["core_busy_pct"] = core_busy_pct(cores)
            rss_before = rss_mib(gw.pid)
            peak_reset = reset_peak_rss(gw.pid)
            with on_side("big", sink_port, gw_url, folder, big, gw.pid) as pipe:
                held = answer(pipe, HOLD_TIMEOUT_S + 2 * REQUEST_TIMEOUT_S)
            held |= {"rss_mib_before": rss_before, "peak_rss_mib": peak_rss_mib(gw.pid)}
            held["peak_is_of_this_phase"] = peak_reset
    alone, beside = figures["small_alone"]["p99_ms"], figures["small_with_edits"]["p99_ms"]
    return {
        "load_average": os.getloadavg(),
        "duration_s": duration,
        "window_s": WINDOW_S,
        "small_rate_per_s": rate,
        "edits_per_s": edits_per_s,
        "max_body_mb": max_body_mb,
        **figures,
        "p99_ratio": beside / alone if alone else math.inf,
        "big_in_flight": held,
    }


def report(figures: dict[str, Any]) -> str:
    held = figures["big_in_flight"]

    def stream(f: dict[str, Any]) -> str:
        cores = f.get("core_busy_pct", {})
        busy = ", ".join(f"{core} {pct:.0f}%" for core, pct in cores.items())
        return (
            f"{f['requests']} ok, p50 {f['p50_ms']:.1f} ms, p90 {f['p90_ms']:.1f} ms, "
            f"p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms"
            + (f" (cores busy: {busy})" if busy else "")
        )

    cores = ", ".join(f"{core} {pct:.0f}%" for core, pct in figures["core_busy_pct"].items())
    load = ", ".join(f"{value:.1f}" for value in figures["load_average"])
    return "\n".join(
        [
            f"small text-to-image at {figures['small_rate_per_s']:g}/s, {figures['duration_s']} s "
            f"of each kind of {figures['window_s']:g} s window (load average {load}; cores "
            f"busy {cores}; gateway CPU {figures['gateway_cpu_pct']:.0f}%)",
            f"  without edits: {stream(figures['small_alone'])}",
            f"  with edits   : {stream(figures['small_with_edits'])}",
            f"  errors {figures['small_errors'] or 0}; p99 with/without edits: "
            f"{figures['p99_ratio']:.2f}x (target <= 1.5x)",
            "  the same upstream exchange (simulator POST + GET) called directly, at half the "
            f"rate: without edits {stream(figures['upstream_alone'])}; with edits "
            f"{stream(figures['upstream_with_edits'])}",
            f"edits at {figures['edits_per_s']:g}/s, {figures['edits']['body_mib']:.1f} MiB each "
            f"(8 data URLs of 2 MB): {stream(figures['edits'])}, "
            f"errors {figures['edits']['errors'] or 0}",
            f"{held['requests']} edits of {held['body_mib']:.0f} MiB at once "
            f"(max_body_mb {figures['max_body_mb']:g}): {held['held_at_upstream']} in flight "
            f"together, RSS {held['rss_mib_while_held']:.0f} MiB while held "
            f"({held['rss_mib_before']:.0f} MiB before), peak {held['peak_rss_mib']:.0f} MiB, "
            f"answers {held['statuses']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds of each window kind")
    parser.add_argument("--rate", type=float, default=100, help="small requests per second")
    parser.add_argument("--edits-per-s", type=float, default=4)
    parser.add_argument("--big", type=int, default=10, help="edits of max_body_mb at once")
    args = parser.parse_args()
    figures = run(args.duration, args.rate, args.edits_per_s, args.big)
    print(report(figures), flush=True)
    Path("bench/edits.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
