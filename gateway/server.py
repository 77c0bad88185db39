"""Running the app under uvicorn: one process, or several workers sharing one port."""

from __future__ import annotations

import os

import uvicorn

from gateway.app import create_app
from gateway.logs import configure
from gateway.settings import Settings


def uvicorn_config(app: object, settings: Settings, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.server.host,
        port=settings.server.port,
        timeout_graceful_shutdown=int(settings.server.drain_s),
        log_config=None,
        access_log=False,
        server_header=False,
        **extra,  # type: ignore[arg-type]
    )


def app_from_environment() -> object:
    """The app factory each worker process calls; settings come from $GATEWAY_CONFIG and env."""
    settings = Settings.load()
    configure(settings.log.level, settings.log.format)
    return create_app(settings)


def serve(settings: Settings, config_path: str | None, workers: int = 1) -> None:
    configure(settings.log.level, settings.log.format)
    if workers <= 1:
        uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
        return
    if config_path:
        os.environ["GATEWAY_CONFIG"] = str(config_path)
    os.environ["GATEWAY_SERVER__HOST"] = settings.server.host
    os.environ["GATEWAY_SERVER__PORT"] = str(settings.server.port)
    uvicorn.run(
        "gateway.server:app_from_environment",
        factory=True,
        workers=workers,
        host=settings.server.host,
        port=settings.server.port,
        timeout_graceful_shutdown=int(settings.server.drain_s),
        log_config=None,
        access_log=False,
        server_header=False,
    )
