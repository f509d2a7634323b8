"""Recovery, fencing, durable sleep and cancel, with two Runtimes in one process.

The first Runtime is closed while its run is mid-way (its loop stops, the run stays
RUNNING in the store), which is what a killed process leaves behind; the real-process
SIGKILL versions are in test_crash.py.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest

import agentdur
from tests.helpers import wait_for

EXECUTED: list[str] = []
GATE = threading.Event()
MODE = {"version": "v1"}


@pytest.fixture(autouse=True)
def _reset() -> None:
    EXECUTED.clear()
    GATE.clear()
    MODE["version"] = "v1"


@agentdur.step
async def record(name: str) -> str:
    EXECUTED.append(name)
    return name.upper()


@agentdur.step
async def other(name: str) -> str:
    EXECUTED.append("other:" + name)
    return name


async def _gate() -> None:
    await asyncio.to_thread(GATE.wait)


@agentdur.workflow(name="test_recovery.gated")
async def gated_flow() -> list[str]:
    first = await record("a")
    if MODE["version"] == "v1":
        second = await record("b")
    else:
        second = await other("b")
    await _gate()
    third = await record("c")
    return [first, second, third]


def _abandon(rt: agentdur.Runtime, run_id: str, steps: int) -> None:
    wait_for(lambda: len(rt.steps(run_id)) == steps, what=f"{steps} recorded steps")
    rt.close()


def test_recover_resumes_from_the_last_checkpoint(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="worker-1")
    handle = first.start(gated_flow, run_id="r1")
    _abandon(first, "r1", 2)
    assert EXECUTED == ["a", "b"]

    GATE.set()
    with agentdur.Runtime(database_url, executor_id="worker-1") as second:
        assert second.get_run("r1").status == "RUNNING"
        handles = second.recover()
        assert [h.run_id for h in handles] == ["r1"]
        assert handles[0].result(timeout=20) == ["A", "B", "C"]
        assert EXECUTED == ["a", "b", "c"]
        run = second.get_run("r1")
        assert (run.status, run.epoch, run.owner) == ("SUCCEEDED", 2, None)
        assert [s.output for s in second.steps("r1")] == ["A", "B", "C"]
    assert handle.run_id == "r1"


def test_recover_true_at_open(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="worker-1")
    first.start(gated_flow, run_id="r2")
    _abandon(first, "r2", 2)
    GATE.set()
    with agentdur.Runtime(database_url, executor_id="worker-1", recover=True) as second:
        assert second.handle("r2").result(timeout=20) == ["A", "B", "C"]


def test_other_executor_waits_for_the_lease_to_expire(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="worker-1", lease_seconds=60)
    first.start(gated_flow, run_id="r3")
    _abandon(first, "r3", 2)
    GATE.set()
    with agentdur.Runtime(database_url, executor_id="worker-2") as second:
        assert second.recover() == []
        assert second.get_run("r3").owner == "worker-1"
    later = lambda: datetime.now(timezone.utc) + timedelta(seconds=120)  # noqa: E731
    with agentdur.Runtime(database_url, executor_id="worker-2", clock=later) as third:
        (handle,) = third.recover()
        assert handle.result(timeout=20) == ["A", "B", "C"]
        assert third.get_run("r3").epoch == 2


def test_changed_code_ends_in_nondeterminism_recorded_on_the_run(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="worker-1")
    first.start(gated_flow, run_id="r6")
    _abandon(first, "r6", 2)
    GATE.set()
    MODE["version"] = "v2"  # the code changed: index 1 now calls `other`
    with agentdur.Runtime(database_url, executor_id="worker-1") as second:
        before = second.steps("r6")
        (handle,) = second.recover()
        with pytest.raises(agentdur.NonDeterminismError) as info:
            handle.result(timeout=20)
        assert info.value.index == 1
        assert info.value.recorded == "step 'record'"
        assert info.value.requested == "step 'other'"
        run = second.get_run("r6")
        assert run.status == "FAILED"
        assert run.error["type"] == "NonDeterminismError"
        assert "at step 1" in run.error["message"]
        assert second.steps("r6") == before
    assert EXECUTED == ["a", "b"]


def test_stalled_owner_is_fenced_and_its_late_write_refused(database_url: str) -> None:
    old = agentdur.Runtime(database_url, executor_id="old", lease_seconds=60)
    stale = old.start(gated_flow, run_id="r7")
    wait_for(lambda: len(old.steps("r7")) == 2, what="two steps")
    later = lambda: datetime.now(timezone.utc) + timedelta(seconds=120)  # noqa: E731
    with agentdur.Runtime(database_url, executor_id="new", clock=later) as new:
        (handle,) = new.recover()  # takes over: epoch 2; `old` still waits at the gate
        assert new.get_run("r7").epoch == 2
        GATE.set()
        assert handle.result(timeout=20) == ["A", "B", "C"]
        with pytest.raises(agentdur.FencedError, match="taken over"):
            stale._future.result(timeout=20)  # type: ignore[union-attr]
        steps = new.steps("r7")
        assert [(s.step_index, s.output) for s in steps] == [(0, "A"), (1, "B"), (2, "C")]
        run = new.get_run("r7")
        assert (run.status, run.epoch) == ("SUCCEEDED", 2)
    old.close()


@agentdur.workflow(name="test_recovery.long_sleep")
async def long_sleep_flow() -> str:
    await record("before")
    await agentdur.sleep(1000)
    return await record("after")


def test_durable_sleep_keeps_its_deadline_across_restarts(database_url: str) -> None:
    first = agentdur.Runtime(database_url, executor_id="worker-1")
    first.start(long_sleep_flow, run_id="s1")
    _abandon(first, "s1", 2)
    sleep_step = agentdur.Runtime(database_url).steps("s1")[1]
    assert (sleep_step.kind, sleep_step.input) == ("sleep", {"seconds": 1000})
    deadline = datetime.fromisoformat(sleep_step.output["until"])
    # Restarted 1001 seconds later: only what is left is slept, i.e. nothing.
    later = lambda: datetime.now(timezone.utc) + timedelta(seconds=1001)  # noqa: E731
    with agentdur.Runtime(database_url, executor_id="worker-1", clock=later) as second:
        (handle,) = second.recover()
        assert handle.result(timeout=20) == "AFTER"
        steps = second.steps("s1")
        assert datetime.fromisoformat(steps[1].output["until"]) == deadline
        assert [s.kind for s in steps] == ["step", "sleep", "step"]


@agentdur.workflow(name="test_recovery.loop")
async def looping_flow() -> None:
    for i in range(1000):
        await record(f"n{i}")
        await _gate()


def test_cancel_stops_the_run_at_the_next_step_boundary(rt: agentdur.Runtime) -> None:
    handle = rt.start(looping_flow)
    wait_for(lambda: len(rt.steps(handle.run_id)) == 1, what="first step")
    assert rt.cancel(handle.run_id) is True
    GATE.set()
    with pytest.raises(agentdur.RunCancelledError):
        handle.result(timeout=20)
    run = rt.get_run(handle.run_id)
    assert run.status == "CANCELLED"
    assert run.finished_at is not None
    assert len(rt.steps(handle.run_id)) == 1
    assert rt.cancel(handle.run_id) is False
    with pytest.raises(agentdur.RunNotFoundError, match="no run with id 'nope'"):
        rt.cancel("nope")


def test_cancel_from_another_process_is_noticed(database_url: str) -> None:
    with agentdur.Runtime(database_url, executor_id="w", lease_seconds=0.3) as rt:
        handle = rt.start(looping_flow)
        wait_for(lambda: len(rt.steps(handle.run_id)) == 1, what="first step")
        # Another Runtime (standing for another process) cancels it in the store.
        with agentdur.Runtime(database_url, executor_id="operator") as other_rt:
            assert other_rt.cancel(handle.run_id) is True
        GATE.set()  # the run goes on to its next step, where it learns of the cancel
        with pytest.raises(agentdur.RunCancelledError):
            handle.result(timeout=20)
        assert len(rt.steps(handle.run_id)) == 1
        assert rt.get_run(handle.run_id).status == "CANCELLED"
