"""What a crash leaves in a filesystem cache shard, found by name and removed once old enough.

A store writes the image under its id and then its record on it (`records`), or, where the
record lives beside it, writes `.<id>.json.part` and renames that to `<id>.json`; a delete
removes the record, then the image. So a temporary file, an image without a record or a record
without its image is a store still running (young), a delete under way (which removes it
anyway) or the remains of a crash (old). Names that are not an id's are not the cache's and
stay.

Everything here blocks: it runs only in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gateway.cache import folder, records
from gateway.cache.base import valid_id

TEMPORARY = ".part"
RECORD = records.BESIDE


def _id_of(name: str) -> tuple[str, str]:
    """(id, kind) for a name a store may write: kind is `temporary`, `record` or `image`."""
    if name.startswith(".") and name.endswith(TEMPORARY):
        return name[1:].removesuffix(TEMPORARY).removesuffix(RECORD), "temporary"
    if name.endswith(RECORD):
        return name.removesuffix(RECORD), "record"
    return name, "image"


def strays(
    names: list[str], after: str, upto: str | None, has_own: Callable[[str], bool]
) -> list[str]:
    """The names among a shard's entries that belong to no whole image (ids in range only);
    `has_own` tells whether an image file carries its record itself."""
    kinds: dict[str, dict[str, list[str]]] = {}
    for name in names:
        image_id, kind = _id_of(name)
        if not valid_id(image_id) or image_id <= after or (upto is not None and image_id > upto):
            continue
        kinds.setdefault(image_id, {}).setdefault(kind, []).append(name)
    found: list[str] = []
    for entries in kinds.values():
        found += entries.get("temporary", [])
        if "record" in entries and "image" not in entries:
            found += entries["record"]
        elif "image" in entries and "record" not in entries and not has_own(entries["image"][0]):
            found += entries["image"]
    return found


def remove_strays(root: Path, after: str | None, upto: str | None, older_than_s: float) -> int:
    """Remove the strays of the shards that ids in (after, upto] fall in; how many went."""
    start = after or ""
    cutoff = time.time() - older_than_s
    removed = 0
    for name in folder.shard_names(root):
        if name < start[:2] or (upto is not None and name > upto[:2]):
            continue
        with contextlib.suppress(FileNotFoundError), folder.shard(root, name) as shard:
            for stray in strays(os.listdir(shard), start, upto, partial(records.has_own, shard)):
                removed += _remove_if_old(shard, stray, cutoff)
    return removed


def _remove_if_old(shard: int, name: str, cutoff: float) -> bool:
    try:
        info = os.lstat(name, dir_fd=shard)
    except FileNotFoundError:
        return False
    mode = info.st_mode
    if info.st_mtime >= cutoff or not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return False
    folder.remove(shard, name)
    return True
