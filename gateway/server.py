"""Running the app under uvicorn: one process, or several workers sharing one port.

With `--workers N` uvicorn's supervisor starts N processes that each build the app from the
same config; limits hold across them through Redis, the cache is shared storage, and metrics
go to files in a fresh `PROMETHEUS_MULTIPROC_DIR` that `/metrics` merges. Every process drains
on SIGTERM (`gateway.drain`) before uvicorn closes its listener.

The environment is read in settings only. This module writes it, for the worker processes
alone: prometheus-client in each worker reads `PROMETHEUS_MULTIPROC_DIR` itself when it is
imported, and each worker loads its settings from `GATEWAY_CONFIG` and `GATEWAY_SERVER__…`.
uvicorn's own proxy-header handling (and its `FORWARDED_ALLOW_IPS`) is off:
`server.trusted_proxies` is the one rule for `X-Forwarded-For`.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from gateway.app import create_app
from gateway.connections import HeadLimits, protocol_factory
from gateway.drain import drain_on_sigterm
from gateway.logs import configure
from gateway.preflight import CannotStart, assemble
from gateway.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BACKLOG = 4096
"""Connections the kernel queues before accept: a burst of thousands of clients connecting at
once must wait in line rather than have their SYNs dropped (the kernel caps it at somaxconn)."""


def uvicorn_config(app: object, settings: Settings, **extra: object) -> uvicorn.Config:
    """uvicorn with the gateway's connection protocol: capped heads, a deadline to send one."""
    server = settings.server
    limits = HeadLimits(
        int(server.max_header_kb * 1024), server.max_header_fields, server.header_timeout_s
    )
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=server.host,
        port=server.port,
        http=protocol_factory(limits),  # type: ignore[arg-type]
        timeout_graceful_shutdown=math.ceil(server.drain_s),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        backlog=BACKLOG,
        **extra,  # type: ignore[arg-type]
    )


def draining(app: Starlette, settings: Settings) -> Starlette:
    """The app a serving process runs, called once in it as uvicorn starts."""
    drain_on_sigterm(app, settings.server.drain_grace_s)
    # What import and start-up built lives as long as the process: keep it out of every
    # garbage collection, which then scans only what requests make.
    gc.freeze()
    return app


def app_from_environment() -> Starlette:
    """The app factory each worker process calls; settings come from $GATEWAY_CONFIG and env."""
    settings = Settings.load()
    configure(settings.log.level, settings.log.format)
    return draining(create_app(settings), settings)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also drops the live gauges of workers that died or were
    replaced, so `gateway_inflight_requests` does not count a dead worker's requests."""

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        self._forget(before)

    def restart_all(self) -> None:
        before = {process.pid for process in self.processes}
        super().restart_all()
        self._forget(before)

    def _forget(self, before: set[int | None]) -> None:
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def fresh_metrics_dir(settings: Settings, workers: int) -> Path | None:
    """Empty the operator's `PROMETHEUS_MULTIPROC_DIR`, or make a private one for workers.

    Files left by an earlier run would be merged into `/metrics` as if they were live.
    Returns the folder to remove at exit, if this run made it.
    """
    folder = settings.prometheus_multiproc_dir
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return None
    if workers <= 1:
        return None
    made = Path(tempfile.mkdtemp(prefix="flux-gateway-metrics-"))
    os.environ[MULTIPROC_ENV] = str(made)
    return made


def _built(settings: Settings) -> Starlette:
    try:
        return assemble(settings)
    except CannotStart as refused:
        print(refused, file=sys.stderr)
        raise SystemExit(2) from None


def raise_open_file_limit() -> None:
    """Every request in flight holds two sockets (client and upstream), so the usual soft
    limit of 1,024 open files would cap a replica near 500 jobs; take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(settings: Settings, config_path: str | None, workers: int = 1) -> None:
    configure(settings.log.level, settings.log.format)
    raise_open_file_limit()
    if workers > 1:
        serve_workers(settings, config_path, workers)
        return
    fresh_metrics_dir(settings, workers)
    app = _built(settings)
    uvicorn.Server(uvicorn_config(lambda: draining(app, settings), settings, factory=True)).run()


def serve_workers(settings: Settings, config_path: str | None, workers: int) -> None:
    """N processes on one port; the config is checked here once, so a bad one stops the
    start rather than N workers that uvicorn would restart forever."""
    if settings.state.backend != "redis":
        raise SystemExit(
            'flux-gateway: --workers needs state.backend = "redis": with memory state each '
            "worker would enforce the team limits on its own."
        )
    _built(settings)
    made = fresh_metrics_dir(settings, workers)
    if config_path:
        os.environ["GATEWAY_CONFIG"] = str(config_path)
    os.environ["GATEWAY_SERVER__HOST"] = settings.server.host
    os.environ["GATEWAY_SERVER__PORT"] = str(settings.server.port)
    config = uvicorn_config(
        "gateway.server:app_from_environment", settings, factory=True, workers=workers
    )
    sock = config.bind_socket()
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
