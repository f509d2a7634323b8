"""Workers dying and stalling, on PostgreSQL, with real processes and short leases.

A worker killed with SIGKILL loses its runs to the others once its lease expires; a
worker paused (SIGSTOP) past its lease finds, when resumed, its late checkpoint refused
(`FencedError`) and stops working on the run, which another worker already finished.
The step log (`run_id index pid event`, fsync'd before each step's work) shows what
executed, where, and how often.
"""

from __future__ import annotations

import collections
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import agentdur
from tests.apps import queue_app
from tests.apps.queue_workers import Workers
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SHORT_LEASE = {"QUEUE_APP_LEASE": "1.0"}
# Three busy workers on two CPUs: a lease of 2 s (heartbeats every 0.67 s) keeps a live
# worker's runs from being taken over when a heartbeat is late, which would (rightly)
# re-execute its step in flight and blur what this test looks at.
KILL_LEASE = {"QUEUE_APP_LEASE": "2.0"}


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, migrated and emptied."""
    agentdur.Runtime(postgres_url)._ensure_store().close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE agentdur.runs, agentdur.steps, agentdur.effects, agentdur.messages, "
            "agentdur.executors"
        )
    return postgres_url


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(pg_url, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


def runs_of(proc: object, owner: str | None) -> bool:
    """Whether `owner` is the worker process `proc` (default ids are host:pid:random)."""
    prefix = f"{socket.gethostname()}:{proc.pid}:"  # type: ignore[attr-defined]
    return owner is not None and owner.startswith(prefix)


def held_runs(url: str) -> list[tuple[str, str | None, int]]:
    """(run_id, owner, checkpointed steps) of every run, in one query."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.run_id, r.owner, (SELECT count(*) FROM agentdur.steps AS s"
            " WHERE s.run_id = r.run_id) FROM agentdur.runs AS r"
        ).fetchall()
    return [(str(run_id), owner, int(steps)) for run_id, owner, steps in rows]


def test_sigkilled_workers_runs_are_taken_over_and_each_step_runs_once(
    workers: Workers, pg_url: str
) -> None:
    procs = [
        workers.start("--queue", "work", "--concurrency", "4", QUEUE_APP_STEP="0.2", **KILL_LEASE)
        for _ in range(3)
    ]
    workers.wait_ready(*procs)
    victim = procs[0]
    with agentdur.Runtime(pg_url, executor_id="test-client") as rt:
        ids = [f"run-{i:02d}" for i in range(30)]
        for run_id in ids:
            rt.enqueue(queue_app.steps, run_id, 5, queue="work", run_id=run_id)

        def midway() -> bool:
            runs = [rt.get_run(run_id) for run_id in ids]
            done = sum(r.status == "SUCCEEDED" for r in runs)
            held = sum(runs_of(victim, r.owner) for r in runs)
            return done >= 6 and held >= 1

        wait_for(midway, timeout=20, what="a third of the runs done, the victim holding some")
        # The survivors see a dead worker on their host at once: pause them while the
        # victim dies and its runs are read (one query, well inside their 2 s lease), so
        # what it held is not taken over before it is read.
        for proc in procs[1:]:
            proc.send_signal(signal.SIGSTOP)
        try:
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            # What the victim held at its death, and how far each run had been checkpointed.
            held = {
                run_id: steps
                for run_id, owner, steps in held_runs(pg_url)
                if runs_of(victim, owner)
            }
        finally:
            for proc in procs[1:]:
                proc.send_signal(signal.SIGCONT)
        assert held

        wait_for(
            lambda: all(rt.get_run(run_id).status == "SUCCEEDED" for run_id in ids),
            timeout=25,
            what="the survivors to finish every run",
        )
        runs = {run_id: rt.get_run(run_id) for run_id in ids}
    assert [workers.stop(proc) for proc in procs[1:]] == [0, 0]

    assert {r.output == list(range(5)) for r in runs.values()} == {True}
    attempts = {run_id: run.attempts for run_id, run in runs.items()}
    assert attempts == {run_id: 2 if run_id in held else 1 for run_id in ids}, held
    lines = workers.lines()
    executed = collections.Counter((run_id, index) for run_id, index, _, _ in lines)
    assert set(executed) == {(run_id, index) for run_id in ids for index in range(5)}
    twice = {key: n for key, n in executed.items() if n > 1}
    # Only a step in flight at the kill ran twice: the first one its run had not checkpointed.
    assert all(n == 2 for n in twice.values()), twice
    assert set(twice) <= {(run_id, k) for run_id, k in held.items()}, (twice, held)
    for run_id, k in held.items():
        after = {pid for rid, index, pid, _ in lines if rid == run_id and index > k}
        assert victim.pid not in after  # the victim did nothing past its death
        survivors = {pid for rid, index, pid, _ in lines if rid == run_id and index >= k}
        assert survivors - {victim.pid} <= {procs[1].pid, procs[2].pid}


def test_paused_worker_is_fenced_when_it_wakes_past_its_lease(
    workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    logfile = tmp_path / "agentdur-warnings.log"
    env = {**SHORT_LEASE, "QUEUE_APP_FENCE": "3", "QUEUE_APP_LOGFILE": str(logfile)}
    stalled = workers.start("--queue", "work", **env)
    workers.wait_ready(stalled)
    with agentdur.Runtime(pg_url, executor_id="test-client") as rt:
        handle = rt.enqueue(queue_app.fenced, "fence-run", queue="work", run_id="fence-run")
        wait_for(
            lambda: ("fence-run", 1, stalled.pid, "sleeping") in workers.lines(),
            what="the slow step to start",
        )
        stalled.send_signal(signal.SIGSTOP)  # inside the 3 s step: no heartbeats now
        try:
            winner = workers.start("--queue", "work", **env)
            assert handle.result(timeout=20) == {"pid": winner.pid}
            run = rt.get_run("fence-run")
            assert (run.status, run.epoch, run.attempts) == ("SUCCEEDED", 2, 2)
        finally:
            stalled.send_signal(signal.SIGCONT)
        # The stalled worker finishes its sleep, and its checkpoint is refused.
        wait_for(
            lambda: ("fence-run", 1, stalled.pid, "slept") in workers.lines(),
            what="the stalled worker to wake",
        )
        wait_for(
            lambda: logfile.exists() and "run fence-run was fenced" in logfile.read_text(),
            what="the stalled worker to report the refusal",
        )
        steps = rt.steps("fence-run")
        assert [(s.step_index, s.status) for s in steps] == [(i, "SUCCEEDED") for i in range(3)]
        assert steps[1].output == {"pid": winner.pid}  # written once, by the new owner
        assert rt.get_run("fence-run").output == {"pid": winner.pid}
    assert workers.stop(stalled) == 0
    assert workers.stop(winner) == 0

    lines = workers.lines()
    by_stalled = [(index, event) for _, index, pid, event in lines if pid == stalled.pid]
    assert by_stalled == [(0, "ran"), (1, "sleeping"), (1, "slept")]  # it stopped there
    by_winner = [(index, event) for _, index, pid, event in lines if pid == winner.pid]
    assert by_winner == [(1, "sleeping"), (1, "slept"), (2, "ran")]  # step 0 was replayed
    warnings = logfile.read_text()
    assert f"{stalled.pid} WARNING" in warnings and "taken over by" in warnings
