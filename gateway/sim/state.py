"""Everything the simulator remembers, in one object held by the app."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.config import Faults, SimConfig
from gateway.sim.ledger import Ledger
from gateway.sim.render import CONTENT_TYPES, RenderSpec, noise_png, render

MAX_REQUESTS = 2000
MAX_RESULTS = 512
MAX_SHARED_RESULTS = 100_000
MAX_RENDERS = 64


@dataclass(frozen=True, slots=True)
class StoredImage:
    data: bytes
    output_format: str
    sha256: str = ""

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.output_format]


@dataclass
class SimState:
    config: SimConfig
    faults: Faults = field(default_factory=Faults)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_REQUESTS))
    results: OrderedDict[str, StoredImage] = field(default_factory=OrderedDict)
    issued: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    renders: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    submits: int = 0
    result_downloads: int = 0
    fixed: StoredImage | None = None
    fixing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """The fast mode's one image is made once, not by every request of a first burst."""
    ledger: Ledger = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.config)

    def reset(self) -> None:
        """Forget everything but the configuration."""
        fresh = SimState(self.config)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        return not self.config.keys or any(
            secrets.compare_digest(key, known) for known in self.config.keys
        )

    @property
    def latency(self) -> float:
        return self.config.latency if self.faults.latency is None else self.faults.latency

    @property
    def ready_after(self) -> float:
        for value in (self.faults.bfl_ready_after, self.faults.latency):
            if value is not None:
                return value
        if self.config.poll_ready_after is not None:
            return self.config.poll_ready_after
        return self.config.latency

    @property
    def url_ttl(self) -> float:
        ttl = self.faults.result_url_ttl
        return self.config.url_ttl if ttl is None else ttl

    def moderated(self, prompt: str) -> bool:
        word = self.config.moderation_word.lower()
        return bool(word) and word in prompt.lower()

    def record(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    def balance(self, key: str) -> float:
        """The key's account balance, or none at all under the `no_credit_keys` fault."""
        if key in self.faults.no_credit_keys:
            return 0.0
        return self.ledger.balance(key)

    async def render(self, spec: RenderSpec) -> StoredImage:
        """Render through a small cache: identical inputs give identical bytes anyway."""
        if self.config.result_kib is not None:
            async with self.fixing:
                if self.fixed is None:
                    data = await noise_png(self.config.result_kib)
                    self.fixed = StoredImage(data, "png", hashlib.sha256(data).hexdigest())
            return self.fixed
        digest = spec.digest()
        cached = self.renders.get(digest)
        if cached is not None:
            self.renders.move_to_end(digest)
            return StoredImage(cached, spec.output_format)
        data = await render(spec)
        self.renders[digest] = data
        while len(self.renders) > MAX_RENDERS:
            self.renders.popitem(last=False)
        return StoredImage(data, spec.output_format)

    @property
    def max_results(self) -> int:
        """In fast mode every result shares one image, so many more links can stay live."""
        return MAX_SHARED_RESULTS if self.config.result_kib is not None else MAX_RESULTS

    def store_result(self, result_id: str, image: StoredImage) -> None:
        self.results[result_id] = image
        while len(self.results) > self.max_results:
            self.results.popitem(last=False)

    def note_link(self, result_id: str, url: str, expires: float) -> None:
        """Log a link handed out (the latest per result), so tests can find the bytes."""
        image = self.results[result_id]
        self.issued.pop(result_id, None)
        self.issued[result_id] = {
            "id": result_id,
            "url": url,
            "expires": expires,
            "content_type": image.content_type,
            "size": len(image.data),
            "sha256": image.sha256 or hashlib.sha256(image.data).hexdigest(),
        }
        while len(self.issued) > self.max_results:
            self.issued.popitem(last=False)

    def take_fail_status(self) -> int | None:
        return self._take("fail_status", "fail_count")

    def take_result_status(self) -> int | None:
        return self._take("result_status", "result_status_count")

    def _take(self, status_field: str, count_field: str) -> int | None:
        status: int | None = getattr(self.faults, status_field)
        count: int = getattr(self.faults, count_field)
        if status is None or count == 0:
            return None
        if count > 0:
            setattr(self.faults, count_field, count - 1)
        return status
