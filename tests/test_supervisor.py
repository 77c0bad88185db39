"""Background tasks under the supervisor: a failure is logged and the task runs again."""

from __future__ import annotations

import asyncio
import json

from gateway.supervisor import TaskSupervisor
from tests.helpers import captured_logs

SAFETY_TIMEOUT_S = 10.0


def _failures(lines: list[str]) -> list[dict[str, object]]:
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["msg"] == "background task failed"]


async def test_a_failing_task_is_logged_and_runs_again() -> None:
    supervisor = TaskSupervisor(first_s=0.001, max_s=0.01)
    runs: list[int] = []
    running_again = asyncio.Event()
    stopped = asyncio.Event()

    async def upkeep() -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            raise RuntimeError("the pool's upkeep broke")
        running_again.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    with captured_logs() as logs:
        supervisor.start("key upkeep agg", upkeep)
        await asyncio.wait_for(running_again.wait(), SAFETY_TIMEOUT_S)
        await supervisor.aclose()
    assert runs == [1, 2]
    assert stopped.is_set()
    [failure] = _failures(logs.lines)
    assert failure["level"] == "error"
    assert failure["task"] == "key upkeep agg"
    assert failure["error"] == 'RuntimeError("the pool\'s upkeep broke")'
    assert failure["restart_in_s"] == 0.001


async def test_the_backoff_doubles_up_to_its_limit_and_a_finished_task_stays_finished() -> None:
    supervisor = TaskSupervisor(first_s=0.001, max_s=0.004)
    runs: list[int] = []

    async def rebuild() -> int:
        runs.append(len(runs) + 1)
        if len(runs) < 5:
            raise ValueError(f"scan {len(runs)} failed")
        return 0

    with captured_logs() as logs:
        supervisor.start("gallery rebuild", rebuild)
        [task] = [t for t in asyncio.all_tasks() if t.get_name() == "gallery rebuild"]
        await asyncio.wait_for(task, SAFETY_TIMEOUT_S)
        await supervisor.aclose()
    assert runs == [1, 2, 3, 4, 5]
    failures = _failures(logs.lines)
    assert [f["error"] for f in failures] == [f"ValueError('scan {i} failed')" for i in range(1, 5)]
    assert [f["restart_in_s"] for f in failures] == [0.001, 0.002, 0.004, 0.004]
    assert {f["task"] for f in failures} == {"gallery rebuild"}


async def test_closing_cancels_every_task_even_one_waiting_to_restart() -> None:
    supervisor = TaskSupervisor(first_s=3600, max_s=3600)
    failed = asyncio.Event()
    healthy_stopped = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise OSError("disk gone")

    async def healthy() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            healthy_stopped.set()

    with captured_logs():
        supervisor.start("retention sweep", broken)
        supervisor.start("lease renewal", healthy)
        await asyncio.wait_for(failed.wait(), SAFETY_TIMEOUT_S)
        await asyncio.wait_for(supervisor.aclose(), SAFETY_TIMEOUT_S)
    assert healthy_stopped.is_set()
    names = {"retention sweep", "lease renewal"}
    assert [t for t in asyncio.all_tasks() if t.get_name() in names] == []
