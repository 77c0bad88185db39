"""What one core of this machine can do with 1 MiB images before any gateway code runs.

Every rehosted request hashes its image (sha256, recorded and used as the ETag) and writes it
to a new file; this measures those two steps alone, pinned to core 0 like the gateway in
`bench.load`, so the load benchmark's figures can be read against the machine's own floor:
buffered writes (through the page cache), O_DIRECT writes (`gateway.cache.direct`, what the
filesystem cache uses), and hashing. Each step runs for `--seconds` and stops by itself.

    python -m bench.floor [--seconds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from gateway.cache.base import ImageMeta
from gateway.cache.direct import NewFile
from gateway.cache.filesystem import FilesystemCache

MIB = 1024 * 1024
CHUNK = 64 * 1024


def cpu_ms_per_call(step: Callable[[int], None], seconds: float) -> tuple[float, float]:
    """(CPU ms per call, calls per wall second) of `step(i)` repeated for `seconds`."""
    calls = 0
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall_start < seconds:
        step(calls)
        calls += 1
    wall = time.perf_counter() - wall_start
    return (time.process_time() - cpu_start) * 1000 / calls, calls / wall


def measure(seconds: float = 3.0, where: str | None = None) -> dict[str, tuple[float, float]]:
    """Each step's (CPU ms per call, calls per wall second), pinned to core 0."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    image = os.urandom(MIB)
    chunks = [image[i : i + CHUNK] for i in range(0, MIB, CHUNK)]
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        folder = Path(tmp)

        def buffered(i: int) -> None:
            with open(folder / f"b{i}", "wb") as out:
                for chunk in chunks:
                    out.write(chunk)

        def direct(i: int) -> None:
            out = NewFile(str(folder / f"d{i}"))
            for chunk in chunks:
                out.write(chunk)
            out.close()

        def sha256(_: int) -> None:
            hashlib.sha256(image).hexdigest()

        return {
            "write 1 MiB file, buffered": cpu_ms_per_call(buffered, seconds),
            "write 1 MiB file, O_DIRECT": cpu_ms_per_call(direct, seconds),
            "sha256 of 1 MiB": cpu_ms_per_call(sha256, seconds),
            "store of 1 MiB by the filesystem cache": stores(folder, image, seconds),
        }


def stores(folder: Path, image: bytes, seconds: float) -> tuple[float, float]:
    """`FilesystemCache.store` one after another on one event loop, as the gateway makes them
    (hash, O_DIRECT write, record, fsync of file and folder, one worker-thread hop each)."""
    cache = FilesystemCache(folder / "cache")
    meta = ImageMeta("bench", "flux-2-pro", "req_bench", "bench")

    async def one() -> AsyncIterator[bytes]:
        yield image

    with asyncio.Runner() as runner:
        return cpu_ms_per_call(
            lambda _: runner.run(cache.store(one(), "image/png", meta, (1, 1))), seconds
        )


def images_per_s(rows: dict[str, tuple[float, float]]) -> float:
    """What hashing and an O_DIRECT write alone allow one core."""
    return 1000 / (rows["write 1 MiB file, O_DIRECT"][0] + rows["sha256 of 1 MiB"][0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary dir)")
    args = parser.parse_args()
    rows = measure(args.seconds, args.dir)
    for name, (cpu_ms, rate) in rows.items():
        print(f"{name}: {cpu_ms:.2f} ms CPU each, {rate:.0f}/s")
    print(f"hash + O_DIRECT write alone bound one core at {images_per_s(rows):.0f} images/s")


if __name__ == "__main__":
    main()
