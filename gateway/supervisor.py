"""Background work that survives its own bugs: a failed task is logged and run again.

Key-pool upkeep, lease renewal, the cache recount, the retention sweep and the gallery rebuild
each loop (or run once) for the life of the process. An unexpected error used to end such a
task without a word; under the supervisor it is logged with the task's name and restarted
after a backoff that doubles from `first_s` to `max_s`. A task that ran healthy for `max_s`
starts again from `first_s`. Cancelling the supervisor at shutdown stops every task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

Work = Callable[[], Awaitable[object]]


class TaskSupervisor:
    """Runs named background tasks, restarting any that fail until `aclose`."""

    def __init__(self, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, work: Work) -> None:
        """Run `work()` now; again after each failure. A normal return ends the task."""
        self._tasks.append(asyncio.create_task(self._supervise(name, work), name=name))

    async def _supervise(self, name: str, work: Work) -> None:
        delay = self.first_s
        while True:
            started = time.monotonic()
            try:
                await work()
                return
            except Exception as exc:  # noqa: BLE001 - the point: no failure ends the task
                if time.monotonic() - started >= self.max_s:
                    delay = self.first_s
                log.error(
                    "background task failed",
                    exc_info=exc,
                    extra={"task": name, "error": repr(exc), "restart_in_s": delay},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_s)

    async def aclose(self) -> None:
        """Cancel every task and wait until each has stopped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
