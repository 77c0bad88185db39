"""The reference for durable-link GETs: a bare Starlette app on uvicorn answering one image's
bytes from memory, with nothing else (no ids, metrics, logs or lookups).

    BENCH_IMAGE=path uvicorn bench.bare:app
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

IMAGE = Path(os.environ.get("BENCH_IMAGE", "/dev/null")).read_bytes()


async def image(request: Request) -> Response:
    return Response(IMAGE, media_type="image/png", headers={"etag": '"bench"'})


app = Starlette(routes=[Route("/images/{name}", image)])
