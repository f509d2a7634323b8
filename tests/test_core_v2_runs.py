"""Core v2 promises about runs, on SQLite and PostgreSQL (the database fault test: SQLite).

- KeyboardInterrupt / SystemExit in a step reach the caller, release the run (PENDING,
  not FAILED) and leave the Runtime usable; `recover()` finishes the run later.
- `recv` with a timeout and a long durable `sleep` release the run as WAITING with a
  wake-up time; the scheduler of the same open Runtime wakes it when the clock passes it.
- A queue's concurrency holds for runs resumed from WAITING.
- An open `Runtime(recover=True)` takes over a run whose owner died after it opened.
- A database that stays unreachable releases the run (never FAILED) and it finishes later.

Clocks are moved instead of sleeping; counts of executions are kept outside the store.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.worker import Worker
from tests.helpers import wait_for

COUNTS: collections.Counter[str] = collections.Counter()
"""How often each step body executed (outside the store)."""
_LOCK = threading.Lock()
MODE: dict[str, Any] = {"interrupt": None}
"""The exception type the interrupting step raises; None once it no longer raises."""
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    COUNTS.clear()
    MODE["interrupt"] = None
    GATE.clear()
    CONCURRENCY.update(now=0, max=0)
    yield
    GATE.set()  # never leave a run blocked on the gate


def _count(name: str) -> None:
    with _LOCK:
        COUNTS[name] += 1


class Clock:
    """Wall time plus an offset that a test moves forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def _runtime(url: str, **options: Any) -> agentdur.Runtime:
    options.setdefault("executor_id", f"test-{uuid.uuid4().hex[:6]}")
    options.setdefault("poll_interval", 0.05)
    return agentdur.Runtime(url, **options)


# -- 1. KeyboardInterrupt / SystemExit inside a step -------------------------------------


@agentdur.step
async def counted(name: str) -> str:
    _count(name)
    return name.upper()


@agentdur.step
async def interrupting(name: str) -> str:
    _count(name)
    if MODE["interrupt"] is not None:
        raise MODE["interrupt"]()
    return name.upper()


@agentdur.workflow(name="test_core_v2_runs.interrupted")
async def interrupted_flow() -> list[str]:
    return [await counted("before"), await interrupting("boom"), await counted("after")]


@agentdur.step
def counted_sync(name: str) -> str:
    _count(name)
    return name.upper()


@agentdur.step
def interrupting_sync(name: str) -> str:
    _count(name)
    if MODE["interrupt"] is not None:
        raise MODE["interrupt"]()
    return name.upper()


@agentdur.workflow(name="test_core_v2_runs.interrupted_sync")
def interrupted_sync_flow() -> list[str]:
    return [counted_sync("before"), interrupting_sync("boom"), counted_sync("after")]


@agentdur.workflow(name="test_core_v2_runs.plain")
async def plain_flow(name: str) -> str:
    return await counted(name)


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("signal", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_a_step_reaches_the_caller_and_leaves_the_run_recoverable(
    rt: agentdur.Runtime, signal: type[BaseException], kind: str
) -> None:
    flow = interrupted_flow if kind == "async" else interrupted_sync_flow
    MODE["interrupt"] = signal
    handle = rt.start(flow)
    with pytest.raises(signal):
        handle.result(timeout=20)

    run = rt.get_run(handle.run_id)
    assert (run.status, run.owner) == ("PENDING", None)
    assert [s.output for s in rt.steps(handle.run_id)] == ["BEFORE"]

    # The Runtime goes on serving: another run started afterwards succeeds.
    assert rt.run(plain_flow, "other") == "OTHER"
    assert rt.get_run(handle.run_id).status == "PENDING"  # nothing took it meanwhile

    MODE["interrupt"] = None
    recovered = {h.run_id: h for h in rt.recover()}
    assert handle.run_id in recovered
    assert recovered[handle.run_id].result(timeout=20) == ["BEFORE", "BOOM", "AFTER"]
    run = rt.get_run(handle.run_id)
    assert (run.status, run.owner) == ("SUCCEEDED", None)
    assert COUNTS == {"before": 1, "boom": 2, "after": 1, "other": 1}


# -- 2. recv with a timeout in a plain Runtime -------------------------------------------


@agentdur.workflow(name="test_core_v2_runs.receiver")
async def receiver_flow() -> list[Any]:
    value = await agentdur.recv("topic", timeout=600)
    return ["got", value]


def _wait_status(rt: agentdur.Runtime, run_id: str, status: str) -> None:
    wait_for(lambda: rt.get_run(run_id).status == status, what=f"run {run_id} {status}")


def test_recv_timeout_is_woken_by_the_scheduler_of_the_same_runtime(database_url: str) -> None:
    clock = Clock()
    with _runtime(database_url, clock=clock) as rt:
        handle = rt.start(receiver_flow)
        _wait_status(rt, handle.run_id, "WAITING")
        run = rt.get_run(handle.run_id)
        assert run.owner is None
        assert run.lease_until is not None  # the wake-up time
        expected = clock() + timedelta(seconds=600)
        assert abs((run.lease_until - expected).total_seconds()) < 5
        # Released: no longer executing here (the store's WAITING is written just before
        # the coroutine unwinds, hence a short wait), so the heartbeat holds no lease.
        wait_for(
            lambda: handle.run_id not in [run_id for run_id, _ in rt._executing()],
            timeout=5,
            what="the run no longer executing",
        )
        (step,) = rt.steps(handle.run_id)
        assert (step.kind, step.status) == ("recv", "WAITING")

        time.sleep(0.3)  # a few scheduler ticks before the wake-up time: nothing happens
        assert rt.get_run(handle.run_id).status == "WAITING"

        clock.advance(601)
        assert handle.result(timeout=20) == ["got", None]
        run = rt.get_run(handle.run_id)
        assert (run.status, run.owner) == ("SUCCEEDED", None)
        (step,) = rt.steps(handle.run_id)
        assert (step.kind, step.name, step.status, step.output) == (
            "recv",
            "topic",
            "SUCCEEDED",
            None,
        )


def test_recv_with_a_timeout_gets_a_message_sent_before_it(database_url: str) -> None:
    clock = Clock()
    with _runtime(database_url, clock=clock) as rt:
        handle = rt.start(receiver_flow)
        _wait_status(rt, handle.run_id, "WAITING")
        rt.send(handle.run_id, "topic", {"x": 1})
        assert handle.result(timeout=20) == ["got", {"x": 1}]
        assert rt.get_run(handle.run_id).status == "SUCCEEDED"
        (step,) = rt.steps(handle.run_id)
        assert (step.kind, step.status, step.output) == ("recv", "SUCCEEDED", {"x": 1})


# -- 3. durable sleep holds nothing ------------------------------------------------------


@agentdur.workflow(name="test_core_v2_runs.long_sleep")
async def long_sleep_flow(i: int) -> int:
    await agentdur.sleep(3600)
    _count("after-sleep")
    return i


@agentdur.workflow(name="test_core_v2_runs.short_sleep")
async def short_sleep_flow() -> str:
    await agentdur.sleep(0.05)
    return await counted("after-short")


@agentdur.workflow(name="test_core_v2_runs.long_sleep_sync")
def long_sleep_sync_flow() -> str:
    agentdur.sleep_sync(3600)
    return counted_sync("after-sync-sleep")


def _count_status(rt: agentdur.Runtime, workflow: str, status: str) -> int:
    return len(rt.list_runs(status=status, workflow=workflow, limit=1000))


def test_two_hundred_long_sleeps_hold_nothing_and_all_wake(database_url: str) -> None:
    clock = Clock()
    name = "test_core_v2_runs.long_sleep"
    with _runtime(database_url, clock=clock) as rt:
        handles = [rt.start(long_sleep_flow, i) for i in range(200)]
        wait_for(
            lambda: _count_status(rt, name, "WAITING") == 200, timeout=60, what="200 WAITING runs"
        )
        wait_for(lambda: rt._executing() == [], timeout=5, what="nothing executing")
        runs = rt.list_runs(workflow=name, limit=1000)
        assert {(r.status, r.owner) for r in runs} == {("WAITING", None)}
        assert COUNTS["after-sleep"] == 0

        clock.advance(3601)
        wait_for(
            lambda: _count_status(rt, name, "SUCCEEDED") == 200,
            timeout=60,
            what="200 SUCCEEDED runs",
        )
        assert [h.result(timeout=20) for h in handles] == list(range(200))
        assert COUNTS["after-sleep"] == 200
        wait_for(lambda: rt._executing() == [], timeout=5, what="nothing executing")
        steps = rt.steps(handles[0].run_id)
        assert [s.kind for s in steps] == ["sleep"]


def test_short_sleep_is_slept_in_process(rt: agentdur.Runtime) -> None:
    handle = rt.start(short_sleep_flow)
    assert handle.result(timeout=20) == "AFTER-SHORT"
    run = rt.get_run(handle.run_id)
    # Never released and claimed again: one attempt, first epoch.
    assert (run.status, run.attempts, run.epoch) == ("SUCCEEDED", 1, 1)
    steps = rt.steps(handle.run_id)
    assert [s.kind for s in steps] == ["sleep", "step"]
    assert steps[0].input == {"seconds": 0.05}
    assert COUNTS["after-short"] == 1


def test_long_sleep_sync_is_released_waiting_then_woken(database_url: str) -> None:
    clock = Clock()
    with _runtime(database_url, clock=clock) as rt:
        handle = rt.start(long_sleep_sync_flow)
        _wait_status(rt, handle.run_id, "WAITING")
        run = rt.get_run(handle.run_id)
        assert run.owner is None
        wait_for(lambda: rt._executing() == [], timeout=5, what="nothing executing")
        assert COUNTS["after-sync-sleep"] == 0

        clock.advance(3601)
        assert handle.result(timeout=20) == "AFTER-SYNC-SLEEP"
        run = rt.get_run(handle.run_id)
        assert (run.status, run.attempts) == ("SUCCEEDED", 2)
        assert [s.kind for s in rt.steps(handle.run_id)] == ["sleep", "step"]
        assert COUNTS["after-sync-sleep"] == 1


# -- 4. queue concurrency for runs resumed from WAITING ----------------------------------

CONCURRENCY = {"now": 0, "max": 0}


@agentdur.step
async def exclusive_body(key: str) -> str:
    with _LOCK:
        CONCURRENCY["now"] += 1
        CONCURRENCY["max"] = max(CONCURRENCY["max"], CONCURRENCY["now"])
        COUNTS[key] += 1
    try:
        await asyncio.sleep(0.1)
    finally:
        with _LOCK:
            CONCURRENCY["now"] -= 1
    return key.upper()


@agentdur.workflow(name="test_core_v2_runs.queued_receiver")
async def queued_receiver_flow(key: str) -> str:
    await agentdur.recv("go")
    return await exclusive_body(key)


@contextmanager
def serving(url: str, queue: agentdur.Queue) -> Iterator[agentdur.Runtime]:
    """A worker Runtime serving `queue` in a thread."""
    worker_rt = _runtime(url, executor_id=f"worker-{uuid.uuid4().hex[:6]}")
    worker = Worker(worker_rt, [queue], poll_interval=0.02, grace=10.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker_rt
    finally:
        worker.stop()
        thread.join(timeout=30)
        worker_rt.close()


def test_queue_concurrency_holds_for_runs_resumed_from_waiting(
    rt: agentdur.Runtime, database_url: str
) -> None:
    queue = agentdur.Queue(f"q1-{uuid.uuid4().hex[:8]}", concurrency=1)
    keys = [f"k{i}" for i in range(5)]
    handles = [rt.enqueue(queued_receiver_flow, key, queue=queue) for key in keys]
    with serving(database_url, queue):
        wait_for(
            lambda: all(rt.get_run(h.run_id).status == "WAITING" for h in handles),
            timeout=30,
            what="5 WAITING runs",
        )
        assert sum(COUNTS.values()) == 0
        for handle in handles:
            rt.send(handle.run_id, "go", None)
        assert [h.result(timeout=30) for h in handles] == [key.upper() for key in keys]
    assert CONCURRENCY["max"] == 1
    assert dict(COUNTS) == {key: 1 for key in keys}
    assert {rt.get_run(h.run_id).status for h in handles} == {"SUCCEEDED"}


# -- 5. an open Runtime(recover=True) takes over a run whose owner died later -------------


async def _gate() -> None:
    await asyncio.to_thread(GATE.wait, 30)


@agentdur.workflow(name="test_core_v2_runs.gated")
async def gated_flow() -> list[str]:
    first = await counted("a")
    second = await counted("b")
    await _gate()
    third = await counted("c")
    return [first, second, third]


def test_open_recovering_runtime_takes_over_a_run_whose_owner_died_later(
    database_url: str,
) -> None:
    clock = Clock()
    with _runtime(
        database_url, executor_id="taker", recover=True, lease_seconds=5, clock=clock
    ) as taker:
        doomed = _runtime(database_url, executor_id="doomed", lease_seconds=60)
        started = doomed.start(gated_flow)
        run_id = started.run_id
        wait_for(lambda: len(doomed.steps(run_id)) == 2, what="two recorded steps")
        doomed.close()  # what a killed process leaves: RUNNING, owned, lease running
        run = taker.get_run(run_id)
        assert (run.status, run.owner, run.epoch) == ("RUNNING", "doomed", 1)
        time.sleep(0.3)  # a few ticks: its lease has not expired, nobody takes it
        assert taker.get_run(run_id).owner == "doomed"

        GATE.set()
        clock.advance(120)  # past the dead owner's lease
        assert taker.handle(run_id).result(timeout=20) == ["A", "B", "C"]
        run = taker.get_run(run_id)
        assert (run.status, run.epoch, run.owner) == ("SUCCEEDED", 2, None)
        assert [s.output for s in taker.steps(run_id)] == ["A", "B", "C"]
    assert COUNTS == {"a": 1, "b": 1, "c": 1}


# -- 6. a database unreachable for longer than write_retry_seconds (SQLite) ----------------


@agentdur.step
async def gated_body(name: str) -> str:
    _count(name)
    await asyncio.to_thread(GATE.wait, 30)
    return name.upper()


@agentdur.workflow(name="test_core_v2_runs.faulted")
async def faulted_flow() -> list[str]:
    return [await counted("first"), await gated_body("gated"), await counted("last")]


class StatusSampler:
    """Reads a run's status every few ms on a connection of its own."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.seen: list[str] = []
        self._path = path
        self._run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        conn = sqlite3.connect(self._path, timeout=5)
        try:
            while True:
                stopping = self._stop.wait(0.01)
                row = conn.execute(
                    "SELECT status FROM runs WHERE run_id = ?", (self._run_id,)
                ).fetchone()
                if row and (not self.seen or self.seen[-1] != row[0]):
                    self.seen.append(row[0])
                if stopping:
                    return  # after one last read
        finally:
            conn.close()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def test_unreachable_database_releases_the_run_which_finishes_later(tmp_path: Path) -> None:
    path = tmp_path / "agentdur.db"
    url = f"sqlite:///{path}?busy_timeout=0.1"
    with _runtime(url, write_retry_seconds=0.5) as rt:
        handle = rt.start(faulted_flow)
        run_id = handle.run_id
        wait_for(lambda: COUNTS["gated"] == 1, what="the gated step's body")
        sampler = StatusSampler(path, run_id)
        locker = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            locked_at = time.monotonic()
            GATE.set()  # the body returns; its checkpoint cannot be written
            wait_for(
                lambda: run_id not in [r for r, _ in rt._executing()],
                timeout=10,
                what="the run released from this process",
            )
            run = rt.get_run(run_id)
            assert (run.status, run.owner) == ("RUNNING", rt.executor_id)
            assert [s.output for s in rt.steps(run_id)] == ["FIRST"]
            time.sleep(max(0.0, 2.0 - (time.monotonic() - locked_at)))
            assert COUNTS["gated"] == 1  # not resumed while the database is away
        finally:
            locker.rollback()
            locker.close()

        assert handle.result(timeout=20) == ["FIRST", "GATED", "LAST"]
        seen = sampler.stop()
        run = rt.get_run(run_id)
        assert (run.status, run.owner) == ("SUCCEEDED", None)
        assert [s.output for s in rt.steps(run_id)] == ["FIRST", "GATED", "LAST"]
    assert "FAILED" not in seen
    assert seen[-1] == "SUCCEEDED"
    # At-least-once for a plain step: the body whose checkpoint failed ran again.
    assert COUNTS == {"first": 1, "gated": 2, "last": 1}


# -- 7. a side effect whose outcome was known but not written ----------------------------

REFUNDS: list[str] = []
"""One entry per execution of the refund tool (the outside world's view)."""


@agentdur.tool(effect="side_effect", key="refund:{order_id}")
def refund_once(order_id: str) -> dict[str, str]:
    """Refund an order."""
    REFUNDS.append(order_id)
    GATE.wait(20)  # the test takes the database away while the refund is under way
    return {"refund_id": f"re_{len(REFUNDS)}"}


def test_a_side_effect_whose_outcome_could_not_be_written_is_settled_not_poisoned(
    tmp_path: Path,
) -> None:
    from agentdur.testing import Scripted

    REFUNDS.clear()
    GATE.clear()
    path = tmp_path / "agentdur.db"
    url = f"sqlite:///{path}?busy_timeout=0.1"
    script = [Scripted.tool_call("refund_once", {"order_id": "A7"}), "refunded"]
    agent = agentdur.Agent(f"settle-{uuid.uuid4().hex[:6]}", Scripted(script), [refund_once])
    with _runtime(url, write_retry_seconds=0.5) as rt:
        handle = rt.start_agent(agent, "refund A7")
        run_id = handle.run_id
        wait_for(lambda: REFUNDS == ["A7"], what="the refund under way")
        locker = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            GATE.set()  # the refund happened; its outcome cannot be written
            wait_for(
                lambda: run_id not in [r for r, _ in rt._executing()],
                timeout=10,
                what="the run released from this process",
            )
            time.sleep(1.0)  # the database stays away a while longer
        finally:
            locker.rollback()
            locker.close()
        assert handle.result(timeout=20)["output"] == "refunded"
        steps = rt.steps(run_id)
        run = rt.get_run(run_id)
    # The refund ran once; the step was settled from what the process knew, not sent to
    # NEEDS_ATTENTION (the tool has no reconcile hook), and the key is not left STARTED.
    assert REFUNDS == ["A7"]
    assert run.status == "SUCCEEDED"
    tool_step = steps[1]
    assert (tool_step.kind, tool_step.status, tool_step.output) == (
        "tool",
        "SUCCEEDED",
        {"refund_id": "re_1"},
    )
    conn = sqlite3.connect(path)
    try:
        entries = conn.execute("SELECT idempotency_key, status FROM effects").fetchall()
    finally:
        conn.close()
    assert entries == [("refund:A7", "DONE")]
