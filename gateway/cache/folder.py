"""The cache folder, reached without following symlinks: what lies in it is not trusted.

Every file is opened, renamed or removed relative to its shard folder's descriptor, and that
folder is opened with O_NOFOLLOW, so a symlink planted in place of a file or of a shard folder
cannot lead a read, a write or a delete outside the cache. Only regular files are read (a FIFO
planted under an image's name would block a worker thread for good).

Everything here blocks: it runs only in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_THERE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


def _missing(name: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no regular file or folder of that name", name)


@contextlib.contextmanager
def shard(root: Path, name: str) -> Iterator[int]:
    """The descriptor of an existing shard folder; FileNotFoundError if it is missing or is
    anything but a real folder (a symlink to one counts as missing)."""
    try:
        fd = os.open(root / name, FOLDER_FLAGS)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            raise _missing(name) from exc
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def make_shard(root: Path, name: str, sync: bool) -> int:
    """The descriptor of a shard folder, made if new (its entry in `root` flushed with `sync`).

    A symlink in its place is refused (ELOOP), never written through.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(root / name, 0o755)
    except FileExistsError:
        pass
    else:
        if sync:
            sync_folder(root)
    return os.open(root / name, FOLDER_FLAGS)


def sync_folder(path: Path) -> None:
    fd = os.open(path, FOLDER_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_file(folder: int, name: str) -> int:
    """A regular file in `folder`, opened for reading; anything else is FileNotFoundError."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            raise _missing(name) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _missing(name)
    return fd


def read_file(folder: int, name: str) -> bytes:
    with os.fdopen(open_file(folder, name), "rb") as source:
        return source.read()


def write_file(folder: int, name: str, data: bytes, sync: bool) -> None:
    """A new file `name` holding `data` (flushed to stable storage with `sync`)."""
    fd = os.open(name, CREATE_FLAGS, 0o644, dir_fd=folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def rename(folder: int, source: str, target: str) -> None:
    os.rename(source, target, src_dir_fd=folder, dst_dir_fd=folder)


def remove(folder: int, name: str) -> None:
    """Remove an entry of `folder` (a symlink itself, never its target); gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def shard_names(root: Path) -> list[str]:
    """The names in `root` that can be shard folders (two characters of an id), sorted."""
    try:
        return sorted(name for name in os.listdir(root) if len(name) == 2)
    except (FileNotFoundError, NotADirectoryError):
        return []
