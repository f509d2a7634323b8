"""Queues in one process, on both backends: enqueue, priorities, dedup, limits, claims.

Limits are checked on the recorded start and finish times of the runs, not by timing the
test: at no instant more runs RUNNING than `concurrency`, no rate window holding more
starts than the limit. Several Runtimes with their own executor ids stand for workers on
several machines (each has its own connection to the database).
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import agentdur
from agentdur.models import Scripted
from agentdur.store import open_store
from agentdur.worker import Worker
from tests.apps.queue_workers import max_overlap, window_gaps

EXECUTED: list[str] = []
"""Run ids in the order their bodies executed (appended under _LOCK)."""
_LOCK = threading.Lock()


@agentdur.step
def body(key: str, seconds: float) -> str:
    with _LOCK:
        EXECUTED.append(key)
    if seconds:
        time.sleep(seconds)
    return key.upper()


@agentdur.workflow(name="test_queues.job")
def job(key: str, seconds: float = 0.0) -> str:
    return body(key, seconds)


@pytest.fixture(autouse=True)
def _clear_executed() -> None:
    EXECUTED.clear()


def new_queue(**limits: Any) -> agentdur.Queue:
    """A queue of its own per test (queue rows and rate windows outlive a test)."""
    return agentdur.Queue(f"q-{uuid.uuid4().hex[:8]}", **limits)


@contextmanager
def serving(
    url: str, queues: list[Any], workers: int = 1, **options: Any
) -> Iterator[list[agentdur.Runtime]]:
    """`workers` Runtimes with executor ids of their own, each serving in a thread."""
    runtimes = [
        agentdur.Runtime(url, executor_id=f"worker{i}-{uuid.uuid4().hex[:6]}")
        for i in range(workers)
    ]
    options = {"poll_interval": 0.02, "grace": 10.0, **options}
    loops = [Worker(rt, queues, **options) for rt in runtimes]
    threads = [threading.Thread(target=w.run, daemon=True) for w in loops]
    for thread in threads:
        thread.start()
    try:
        yield runtimes
    finally:
        for w in loops:
            w.stop()
        for thread in threads:
            thread.join(timeout=30)
        for rt in runtimes:
            rt.close()


def wait_all(handles: list[agentdur.RunHandle], timeout: float = 30.0) -> list[Any]:
    return [h.result(timeout=timeout) for h in handles]


# -- enqueue -----------------------------------------------------------------------------


def test_enqueued_run_waits_for_a_worker_then_runs_once(
    rt: agentdur.Runtime, database_url: str
) -> None:
    queue = new_queue()
    handle = rt.enqueue(job, "a", queue=queue)
    time.sleep(0.2)
    run = rt.get_run(handle.run_id)
    assert (run.status, run.owner, run.attempts, run.started_at) == ("ENQUEUED", None, 0, None)
    assert run.queue == queue.name
    assert EXECUTED == []

    with serving(database_url, [queue]):
        assert handle.result(timeout=20) == "A"
    run = rt.get_run(handle.run_id)
    assert (run.status, run.attempts, run.epoch, run.owner) == ("SUCCEEDED", 1, 1, None)
    assert run.started_at is not None and run.finished_at is not None
    assert run.created_at <= run.started_at <= run.finished_at
    assert EXECUTED == ["a"]


def test_queue_is_found_by_name_and_an_unknown_name_is_an_error(
    rt: agentdur.Runtime, database_url: str
) -> None:
    queue = new_queue()
    handle = rt.enqueue(job, "b", queue=queue.name)
    assert rt.get_run(handle.run_id).queue == queue.name
    with pytest.raises(agentdur.NotRegisteredError, match="no-such-queue"):
        rt.enqueue(job, "c", queue="no-such-queue")
    with serving(database_url, [queue.name]):
        assert handle.result(timeout=20) == "B"


def test_lower_priority_value_first_then_older(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue(concurrency=1)
    order = [("p5-first", 5), ("p0-first", 0), ("p5-second", 5), ("pm1", -1), ("p0-second", 0)]
    handles = [rt.enqueue(job, key, queue=queue, priority=p) for key, p in order]
    with serving(database_url, [queue]):
        wait_all(handles)
    assert EXECUTED == ["pm1", "p0-first", "p0-second", "p5-first", "p5-second"]
    starts = [rt.get_run(h.run_id).started_at for h in handles]
    by_start = [key for _, (key, _) in sorted(zip(starts, order, strict=True), key=lambda p: p[0])]
    assert by_start == EXECUTED


def test_dedup_id_returns_the_unfinished_run(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue()
    first = rt.enqueue(job, "d", queue=queue, dedup_id="doc-1")
    again = rt.enqueue(job, "d", queue=queue, dedup_id="doc-1")
    assert again.run_id == first.run_id
    assert [r.run_id for r in rt.list_runs(workflow="test_queues.job")] == [first.run_id]
    with serving(database_url, [queue]):
        assert first.result(timeout=20) == "D"
    # Finished: the dedup id is free again.
    later = rt.enqueue(job, "d", queue=queue, dedup_id="doc-1")
    assert later.run_id != first.run_id
    assert rt.get_run(later.run_id).status == "ENQUEUED"
    assert EXECUTED == ["d"]


def test_enqueue_with_an_existing_run_id_is_idempotent(rt: agentdur.Runtime) -> None:
    queue = new_queue()
    first = rt.enqueue(job, "e", queue=queue, run_id="fixed-id")
    again = rt.enqueue(job, "e", queue=queue, run_id="fixed-id")
    assert again.run_id == first.run_id == "fixed-id"
    assert len(rt.list_runs(workflow="test_queues.job")) == 1
    with pytest.raises(agentdur.RunInputMismatchError):
        rt.enqueue(job, "other input", queue=queue, run_id="fixed-id")


def test_enqueue_an_agent_with_its_prompt(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue()
    model = Scripted(lambda messages, info: f"echo: {messages[-1].content}")
    agent = agentdur.Agent(f"echo-{uuid.uuid4().hex[:6]}", model, instructions="Echo.")
    handle = rt.enqueue(agent, "hello queue", queue=queue)
    assert rt.get_run(handle.run_id).workflow == f"agent:{agent.name}"
    with serving(database_url, [queue]):
        data = handle.result(timeout=20)
    result = rt.agent_result(agent, handle.run_id, data)
    assert result.output == "echo: hello queue"
    assert [s.kind for s in rt.steps(handle.run_id)] == ["llm"]


# -- limits ------------------------------------------------------------------------------


def test_global_concurrency_holds_across_workers(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue(concurrency=2)
    handles = [rt.enqueue(job, f"c{i}", 0.15, queue=queue) for i in range(8)]
    with serving(database_url, [queue], workers=3):
        wait_all(handles)
    runs = [rt.get_run(h.run_id) for h in handles]
    assert max_overlap(runs) == 2
    assert sorted(EXECUTED) == sorted(f"c{i}" for i in range(8))


def test_worker_concurrency_caps_one_process(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue(worker_concurrency=1)
    other = new_queue()
    handles = [rt.enqueue(job, f"w{i}", 0.1, queue=queue) for i in range(4)]
    handles += [rt.enqueue(job, f"o{i}", 0.3, queue=other) for i in range(2)]
    with serving(database_url, [queue, other]):
        wait_all(handles)
    capped = [rt.get_run(h.run_id) for h in handles[:4]]
    free = [rt.get_run(h.run_id) for h in handles[4:]]
    assert max_overlap(capped) == 1
    assert max_overlap(free) == 2  # the cap is per queue: the other queue ran alongside
    assert max_overlap(capped + free) == 3


def test_worker_concurrency_option_caps_all_its_queues(
    rt: agentdur.Runtime, database_url: str
) -> None:
    first, second = new_queue(), new_queue()
    handles = [rt.enqueue(job, f"x{i}", 0.1, queue=q) for i in range(3) for q in (first, second)]
    with serving(database_url, [first, second], concurrency=2):
        wait_all(handles)
    assert max_overlap([rt.get_run(h.run_id) for h in handles]) == 2


def test_rate_limit_is_a_sliding_window_over_recorded_starts(
    rt: agentdur.Runtime, database_url: str
) -> None:
    queue = new_queue(rate_limit=agentdur.RateLimit(3, 2.0))
    handles = [rt.enqueue(job, f"r{i}", queue=queue) for i in range(7)]
    with serving(database_url, [queue], workers=2):
        wait_all(handles)
    starts = [rt.get_run(h.run_id).started_at for h in handles]
    # Any 2.0 s window holds at most 3 starts: the 4th start after any start is >2.0 s later.
    gaps = window_gaps(starts, 3)
    assert len(gaps) == 4 and all(gap > 2.0 for gap in gaps), gaps
    # ... and the workers did not wait much longer than the window asked.
    first, last = min(starts), max(starts)  # type: ignore[type-var]
    assert (last - first).total_seconds() < 4.0 + 2.0


# -- claims ------------------------------------------------------------------------------


def test_idle_postgres_worker_is_woken_by_notify(postgres_url: str) -> None:
    queue = new_queue()
    worker_rt = agentdur.Runtime(postgres_url, executor_id="idle-worker", lease_seconds=300.0)
    worker = Worker(worker_rt, [queue], poll_interval=30.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # it found nothing and sleeps for up to 30 s (recovery: 100 s)
        with agentdur.Runtime(postgres_url, executor_id="enqueuer") as rt:
            enqueued = time.monotonic()
            handle = rt.enqueue(job, "n", queue=queue)
            assert handle.result(timeout=10) == "N"
            assert time.monotonic() - enqueued < 10
    finally:
        worker.stop()
        thread.join(timeout=30)
        worker_rt.close()
    assert not thread.is_alive()


def test_no_run_is_handed_to_two_workers(rt: agentdur.Runtime, database_url: str) -> None:
    queue = new_queue()
    handles = [rt.enqueue(job, f"k{i}", queue=queue) for i in range(60)]
    with serving(database_url, [queue], workers=4, concurrency=3):
        wait_all(handles, timeout=60)
    runs = [rt.get_run(h.run_id) for h in handles]
    assert {(r.status, r.attempts, r.epoch) for r in runs} == {("SUCCEEDED", 1, 1)}
    assert collections.Counter(EXECUTED) == {f"k{i}": 1 for i in range(60)}


def test_dequeue_hammered_from_threads_hands_each_run_out_once(
    rt: agentdur.Runtime, database_url: str
) -> None:
    queue = new_queue()
    handles = [rt.enqueue(job, f"h{i}", queue=queue) for i in range(150)]
    taken: dict[str, list[str]] = {}
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def hammer(owner: str) -> None:
        store = open_store(database_url)  # a store (connection) of its own, like a machine
        mine: list[str] = []
        try:
            barrier.wait()
            while True:
                now = datetime.now(timezone.utc)
                runs = store.dequeue(
                    queue.name,
                    owner=owner,
                    now=now,
                    lease_until=now + timedelta(seconds=60),
                    limit=2,
                    concurrency=None,
                    rate=None,
                )
                if not runs:
                    break
                assert all(r.owner == owner and r.status == "RUNNING" for r in runs)
                mine += [r.run_id for r in runs]
                time.sleep(0.002)  # a worker does some work between claims
        except BaseException as exc:
            errors.append(exc)
        finally:
            taken[owner] = mine
            store.close()

    threads = [threading.Thread(target=hammer, args=(f"owner{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    everything = [run_id for mine in taken.values() for run_id in mine]
    assert len(everything) == len(set(everything)) == 150
    assert set(everything) == {h.run_id for h in handles}
    for owner, mine in taken.items():
        for run_id in mine:
            run = rt.get_run(run_id)
            assert (run.owner, run.epoch, run.attempts) == (owner, 1, 1)
    assert sum(1 for mine in taken.values() if mine) >= 2  # they did compete
