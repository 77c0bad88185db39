"""Ids that must be unique but need not be secret (request ids, key leases).

A random prefix is drawn once per process (again in a forked child), then a counter runs, so
a request pays no system call for its ids: each `getrandom` on the event loop gives up the GIL,
and under load a worker thread then holds it while the loop waits. Ids a client could abuse by
guessing (images, jobs, keys) stay `secrets` tokens.
"""

from __future__ import annotations

import itertools
import os
import secrets

_prefix = secrets.token_hex(6)
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(6)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_reseed)


def unique_hex() -> str:
    """24 hex characters, unique across processes and time (48 random bits, then a count)."""
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"
