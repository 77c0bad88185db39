"""Edge attacks on a real gateway process: huge bodies, huge headers, slowloris.

Starts the simulator and the gateway as processes on 127.0.0.1 (as `bench.load` does), then
replays, one phase at a time, the attacks of issue 13 point 7 and prints the gateway's peak
RSS during each phase and its RSS once the phase is over:

- 20 concurrent 90 MB JSON bodies with a valid key (a 90 MB prompt), and the same with four
  ~22 MB data URL reference images each;
- 20 concurrent requests with one 16 MiB header, and 20 with 100,000 header fields;
- 1,000 slowloris connections of each kind: headers sent a byte at a time, idle (nothing
  sent), and a valid request whose body trickles in; how long the gateway held each.

Every socket is loopback, every phase bounded in time. Peak RSS is the kernel's high-water
mark (`VmHWM`), reset before each phase through `/proc/PID/clear_refs`.

    python -m bench.attack [--body-mb 90] [--bodies 20] [--slowloris 1000] [--hold-cap-s 100]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from bench.load import SIM_KEYS, gateway_config, raise_file_limit
from tests.helpers import free_port, running

KEY = "sk-bench-0123456789"
QUIET = subprocess.DEVNULL
PHASE_TIMEOUT_S = 300.0
SETTLE_S = 3.0
DRIP_EVERY_S = 5.0
CHUNK = 1 << 20
PNG = b"\x89PNG\r\n\x1a\n"


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid: int) -> None:
    """Make `VmHWM` start again from the current RSS (Linux 4.0+, own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def plain_body(size: int) -> bytes:
    head, tail = b'{"model": "flux-2-pro", "prompt": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def data_url_body(size: int, images: int = 4) -> bytes:
    """A body of about `size` bytes: a prompt and `images` PNG-headed data URLs."""
    raw = (size // images) * 3 // 4 - 64
    payload = PNG + os.urandom(raw - len(PNG))
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    body = {"model": "flux-2-pro", "prompt": "x"}
    body |= {("input_image" if i == 0 else f"input_image_{i + 1}"): url for i in range(images)}
    return orjson.dumps(body)


def request_head(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in items)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_status(reader: asyncio.StreamReader) -> str:
    """The status code of the answer, or how the connection ended without one."""
    try:
        line = await reader.readline()
    except (ConnectionError, OSError) as exc:
        return type(exc).__name__
    if not line:
        return "closed"
    return line.split()[1].decode() if len(line.split()) > 1 else "garbled"


async def one_upload(port: int, head: bytes, body: bytes) -> tuple[str, int]:
    """Send `head` and stream `body`; the answer and how many body bytes went before it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    answered = asyncio.ensure_future(read_status(reader))
    try:
        writer.write(head)
        view = memoryview(body)
        while sent < len(body) and not answered.done():
            writer.write(view[sent : sent + CHUNK])
            sent += min(CHUNK, len(body) - sent)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    status = await answered
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
    return status, sent


async def uploads(port: int, count: int, head: bytes, body: bytes) -> dict[str, object]:
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        answers = await asyncio.gather(*(one_upload(port, head, body) for _ in range(count)))
    whole = sum(1 for _, sent in answers if sent == len(body))
    return {"statuses": dict(Counter(s for s, _ in answers)), "bodies_sent_whole": whole}


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the gateway closed the connection (after any answer, a 408 or 431)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    return True


async def slowloris(port: int, kind: str, count: int, cap_s: float) -> dict[str, object]:
    """`count` connections that dribble; seconds until the gateway closed each (cap: still open)."""
    opened = time.monotonic()

    async def one() -> float | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return 0.0
        start = time.monotonic()
        if kind == "headers":
            writer.write(b"POST /v1/images/generations HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            drip = b"x-drip-" * 10_000
        elif kind == "body":
            writer.write(
                request_head(
                    "POST",
                    "/v1/images/generations",
                    {
                        "authorization": f"Bearer {KEY}",
                        "content-type": "application/json",
                        "content-length": "1000000",
                    },
                )
            )
            drip = b"{" + b" " * 999_999
        else:
            drip = b""
        try:
            for i in range(int(cap_s / DRIP_EVERY_S) + 1):
                if await closed_within(reader, DRIP_EVERY_S):
                    return time.monotonic() - start
                if time.monotonic() - opened > cap_s:
                    return None
                if i < len(drip):
                    writer.write(drip[i : i + 1])
            return None
        except (ConnectionError, OSError):
            return time.monotonic() - start
        finally:
            writer.close()

    held = await asyncio.gather(*(one() for _ in range(count)))
    times = [h for h in held if h is not None]
    return {
        "closed_by_gateway": len(times),
        "still_open_at_cap": count - len(times),
        "median_held_s": round(statistics.median(times), 1) if times else None,
        "max_held_s": round(max(times), 1) if times else None,
    }


def phase(pid: int, name: str, attack: Coroutine[Any, Any, dict[str, object]]) -> dict[str, object]:
    before = rss_mib(pid, "VmRSS")
    reset_peak(pid)
    started = time.monotonic()
    result = asyncio.run(attack)
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["rss_before_mib"] = round(before)
    result["peak_rss_mib"] = round(rss_mib(pid, "VmHWM"))
    time.sleep(SETTLE_S)
    result["rss_after_mib"] = round(rss_mib(pid, "VmRSS"))
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


PHASES = (
    "bodies_plain_json",
    "bodies_data_urls",
    "header_16mib",
    "header_100k_fields",
    "slowloris_headers",
    "slowloris_idle",
    "slowloris_body",
)


def attacks(
    port: int, args: argparse.Namespace
) -> dict[str, Callable[[], Coroutine[Any, Any, dict[str, object]]]]:
    """Each phase's attack, built only when it runs (the bodies are large)."""
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    size = args.body_mb * 1_000_000

    def post(body: bytes) -> Coroutine[Any, Any, dict[str, object]]:
        length = {"content-length": str(len(body))}
        head = request_head("POST", "/v1/images/generations", {**auth, **length})
        return uploads(port, args.bodies, head, body)

    def get(headers: list[tuple[str, str]]) -> Coroutine[Any, Any, dict[str, object]]:
        head = request_head("GET", "/v1/models", [*auth.items(), *headers])
        return uploads(port, args.bodies, head, b"")

    def loris(kind: str) -> Callable[[], Coroutine[Any, Any, dict[str, object]]]:
        return lambda: slowloris(port, kind, args.slowloris, args.hold_cap_s)

    return {
        "bodies_plain_json": lambda: post(plain_body(size)),
        "bodies_data_urls": lambda: post(data_url_body(size)),
        "header_16mib": lambda: get([("x-pad", "a" * (16 << 20))]),
        "header_100k_fields": lambda: get([(f"x-f{i}", "v") for i in range(100_000)]),
        "slowloris_headers": loris("headers"),
        "slowloris_idle": loris("idle"),
        "slowloris_body": loris("body"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--body-mb", type=int, default=90)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--hold-cap-s", type=float, default=100.0)
    parser.add_argument("--out", default="bench/attack.json")
    parser.add_argument("--phases", default=",".join(PHASES), help="a comma-separated subset")
    args = parser.parse_args()
    wanted = set(args.phases.split(","))
    raise_file_limit(4 * args.slowloris + 1024)
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sim_port, port = free_port(), free_port()
        sim_cmd = [sys.executable, "-m", "gateway.cli", "sim", "--port", str(sim_port)]
        sim_cmd += ["--keys", ",".join(SIM_KEYS), "--max-active-per-key", "100000"]
        config = gateway_config(folder, port, sim_port, None)
        gw_cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
        with (
            running(sim_cmd, f"http://127.0.0.1:{sim_port}/_sim/stats", output=QUIET),
            running(gw_cmd, f"http://127.0.0.1:{port}/healthz", output=QUIET) as gw,
        ):
            report["idle_rss_mib"] = round(rss_mib(gw.pid, "VmRSS"))
            print(f"gateway idle RSS: {report['idle_rss_mib']} MiB", flush=True)
            for name, attack in attacks(port, args).items():
                if name in wanted:
                    report[name] = phase(gw.pid, name, attack())
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
