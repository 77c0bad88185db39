"""Where the filesystem cache keeps an image's record: on the image file, as a user extended
attribute, so an image is one file; else beside it as `<id>.json` (filesystems without user
attributes, records too large for one, and caches written before records moved into the file).

Everything here blocks: it runs only in worker threads.
"""

from __future__ import annotations

import errno
import os

from gateway.cache import folder

ATTRIBUTE = "user.flux-gateway.record"
BESIDE = ".json"
NO_ROOM = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.E2BIG, errno.ENOSPC, errno.ERANGE})
"""What `setxattr` answers where the record cannot live on the file (no user attributes on
this filesystem, or more record than an attribute holds): it is then written beside it."""


def put(fd: int, raw: bytes) -> bool:
    """Put the record on the image file; False where the filesystem cannot hold it there."""
    try:
        os.setxattr(fd, ATTRIBUTE, raw)
    except OSError as exc:
        if exc.errno in NO_ROOM:
            return False
        raise
    return True


def read(shard: int, image_id: str) -> bytes | None:
    """The raw record of an image: on its file, else beside it; None when it has none."""
    try:
        fd = folder.open_file(shard, image_id)
    except FileNotFoundError:
        pass
    else:
        try:
            return os.getxattr(fd, ATTRIBUTE)
        except OSError as exc:
            if exc.errno != errno.ENODATA and exc.errno not in NO_ROOM:
                raise
        finally:
            os.close(fd)
    try:
        return folder.read_file(shard, f"{image_id}{BESIDE}")
    except FileNotFoundError:
        return None


def has_own(shard: int, image_id: str) -> bool:
    """Whether the image file itself carries a record (a file without one is a stray)."""
    try:
        fd = folder.open_file(shard, image_id)
    except FileNotFoundError:
        return False
    try:
        os.getxattr(fd, ATTRIBUTE)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
