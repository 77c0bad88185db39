"""What a backend reserved or leased remembers the backend that made it (SPEC 6).

Under fail-open an admission or a key slot may be taken on the memory fallback while Redis is
down; only the backend holding it can give it back, so settling, renewing and releasing go
there, also once Redis answers again (`guard.py` routes by `backend`).
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

BackendName = Literal["memory", "redis"]


@runtime_checkable
class Held(Protocol):
    """A reservation or a slot: settled, renewed and released on `backend` only."""

    @property
    def backend(self) -> BackendName: ...
