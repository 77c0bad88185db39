"""New files written past the page cache: exact bytes whatever the sizes, and a plain-write
fallback where the filesystem refuses O_DIRECT."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from gateway.cache import direct
from gateway.cache.direct import BLOCK, STAGE_BYTES, NewFile

SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, STAGE_BYTES - 1, STAGE_BYTES, 3 * STAGE_BYTES + 123]


def written(path: Path, data: bytes, piece: int) -> NewFile:
    out = NewFile(str(path))
    for offset in range(0, len(data), piece):
        out.write(data[offset : offset + piece])
    out.close()
    return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [1000, 64 * 1024, 5 * STAGE_BYTES])
def test_file_holds_exactly_the_bytes_written(tmp_path: Path, size: int, piece: int) -> None:
    data = os.urandom(size)
    out = written(tmp_path / "image", data, piece)
    assert (tmp_path / "image").read_bytes() == data
    assert out.size == size


def test_this_filesystem_takes_the_direct_path(tmp_path: Path) -> None:
    out = NewFile(str(tmp_path / "probe"))
    try:
        assert out.buffer is not None
        assert fcntl.fcntl(out.fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        out.abandon()


def test_filesystem_without_o_direct_gets_plain_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777, dir_fd: int | None = None) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(direct.os, "open", refusing)
    data = os.urandom(STAGE_BYTES + 7)
    out = written(tmp_path / "image", data, 64 * 1024)
    assert out.buffer is None
    assert (tmp_path / "image").read_bytes() == data


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "image").write_bytes(b"first")
    with pytest.raises(FileExistsError):
        NewFile(str(tmp_path / "image"))
    assert (tmp_path / "image").read_bytes() == b"first"
