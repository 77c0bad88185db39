"""CPU steps on big inputs run in a worker thread, in slices, so the event loop keeps serving.

Base64 and JSON cost milliseconds per megabyte, and an edit carries up to `server.max_body_mb`
of references: on the event loop that stalls every other request for as long. `run` moves a
step on a big input to a worker thread and runs a small one inline (a thread hop costs about
50 µs, which small requests must not pay). A thread alone is not enough: a C call holds the
GIL for its whole length, and a thread that waits for the GIL waits a switch interval (5 ms)
before it may take it over. So big steps work in slices of well under a millisecond and call
`breathe` between them, which hands the GIL to a waiting event loop at once; the loop runs
ahead and the worker takes the time the loop leaves. One worker thread takes them all, in
turn: the GIL runs one thread at a time anyway, and with each more worker breathing the loop
would get a smaller turn of it (big edits arriving faster than one core decodes them would
starve everything else).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

THRESHOLD = 64 * 1024
"""Inputs from this many bytes run in a worker thread; smaller ones inline."""
WORKERS = 1
_WORKERS: RunVar[anyio.CapacityLimiter] = RunVar("gateway.offload.workers")

T = TypeVar("T")
Args = TypeVarTuple("Args")


async def run(size: int, step: Callable[[Unpack[Args]], T], *args: *Args) -> T:
    """`step(*args)`, in a worker thread when its input is `size` bytes or more."""
    if size < THRESHOLD:
        return step(*args)
    return await anyio.to_thread.run_sync(step, *args, limiter=_workers())


def _workers() -> anyio.CapacityLimiter:
    """This event loop's limiter of offload workers (tests run several loops)."""
    try:
        return _WORKERS.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(WORKERS)
        _WORKERS.set(limiter)
        return limiter


def breathe() -> None:
    """Between two slices of a long step: let a thread waiting for the GIL (the loop) run now.

    Releasing the GIL is not enough on a busy core, where the releasing thread takes it back
    before the waiter is scheduled; yielding the CPU lets the waiter take it."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()
    else:  # pragma: no cover - platforms without sched_yield
        time.sleep(0)
