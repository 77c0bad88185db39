"""The demo's client and admin keys, kept in its data folder so that a shell which exported
them yesterday still works after a restart."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.keys import new_client_key

KEY_FILE = "demo-keys.json"


class KeyFileError(Exception):
    """The key file cannot be read or written; the message says which and what to do."""


@dataclass(frozen=True)
class DemoKeys:
    client: str
    admin: str


def kept_keys(folder: Path, *, renew: bool) -> tuple[DemoKeys, Path]:
    """The keys stored in `folder`, or new ones (stored, mode 0600) if none are or `renew`."""
    path = folder / KEY_FILE
    if not renew and path.exists():
        return _read(path), path
    keys = DemoKeys(client=new_client_key(), admin=new_client_key())
    _write(path, keys)
    return keys, path


def _read(path: Path) -> DemoKeys:
    try:
        data = json.loads(path.read_text())
        return DemoKeys(client=str(data["client_key"]), admin=str(data["admin_key"]))
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise KeyFileError(f"{path} is not a demo key file (remove it or pass --new-key)") from None


def _write(path: Path, keys: DemoKeys) -> None:
    """Written to a private temporary file, then renamed: never readable by others, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"client_key": keys.client, "admin_key": keys.admin}, out)
        os.replace(temporary, path)
    except OSError as exc:
        raise KeyFileError(
            f"cannot write {path}: {exc.strerror} (pass another --data-dir)"
        ) from None
