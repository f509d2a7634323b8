"""`agentdur worker` as real processes, on both backends: sharing a queue, global limits
across processes, SIGTERM, and the command's options and errors; and the doc pipeline
example killed and restarted.

Workers run `tests/apps/queue_app.py`; each of its steps appends `run_id index pid` to a
log file (fsync), which is how a test sees which process executed what, and how often.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import agentdur
from agentdur.cli_worker import main as worker_main
from tests.apps import queue_app
from tests.apps.queue_workers import APP, ROOT, Workers, max_overlap, window_gaps
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(database_url, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


@pytest.fixture
def client(database_url: str) -> Iterator[agentdur.Runtime]:
    """The test's own Runtime: enqueues and reads (the app's workflows are imported)."""
    with agentdur.Runtime(database_url, executor_id="test-client") as rt:
        yield rt


def all_finished(rt: agentdur.Runtime, handles: list[agentdur.RunHandle]) -> bool:
    return all(rt.get_run(h.run_id).status == "SUCCEEDED" for h in handles)


def test_worker_processes_share_a_queue_and_run_each_run_once(
    workers: Workers, client: agentdur.Runtime, backend: str
) -> None:
    count = 3 if backend == "postgres" else 2
    procs = [
        workers.start("--queue", "work", "--concurrency", "4", QUEUE_APP_STEP="0.05")
        for _ in range(count)
    ]
    workers.wait_ready(*procs)
    ids = [f"share-{i}" for i in range(40)]
    handles = [
        client.enqueue(queue_app.steps, run_id, 2, queue="work", run_id=run_id) for run_id in ids
    ]
    wait_for(lambda: all_finished(client, handles), timeout=30, what="40 runs to finish")
    codes = [workers.stop(proc) for proc in procs]
    assert codes == [0] * count, [workers.output(proc) for proc in procs]

    runs = [client.get_run(run_id) for run_id in ids]
    assert {(r.status, r.attempts, r.epoch) for r in runs} == {("SUCCEEDED", 1, 1)}
    executed = collections.Counter((run_id, index) for run_id, index, _, _ in workers.lines())
    assert executed == {(run_id, index): 1 for run_id in ids for index in range(2)}
    pids = {pid for _, _, pid, _ in workers.lines()}
    assert pids <= {proc.pid for proc in procs}
    assert len(pids) >= 2  # the processes did share the work
    for proc in procs:
        out, _ = workers.output(proc)
        assert f"worker {os.uname().nodename}:{proc.pid}:" in out and "serving work" in out
        assert "stopped" in out.splitlines()[-1]


def test_global_limits_hold_across_worker_processes(
    workers: Workers, client: agentdur.Runtime
) -> None:
    procs = [workers.start("--concurrency", "2", QUEUE_APP_STEP="0.3") for _ in range(2)]
    workers.wait_ready(*procs)
    pair = [client.enqueue(queue_app.steps, f"p{i}", 1, queue="pair") for i in range(6)]
    paced = [client.enqueue(queue_app.steps, f"r{i}", 0, queue="paced") for i in range(5)]
    wait_for(lambda: all_finished(client, pair + paced), timeout=30, what="the runs to finish")
    codes = [workers.stop(proc) for proc in procs]
    assert codes == [0, 0], [workers.output(proc) for proc in procs]

    # Queue "pair": concurrency=2 over both processes (each would take 2 on its own).
    assert max_overlap([client.get_run(h.run_id) for h in pair]) == 2
    # Queue "paced": RateLimit(3, 2.0): the 4th start after any start is > 2.0 s later.
    gaps = window_gaps([client.get_run(h.run_id).started_at for h in paced], 3)
    assert len(gaps) == 2 and all(gap > 2.0 for gap in gaps), gaps


def test_sigterm_lets_the_held_run_finish_and_takes_no_more(
    workers: Workers, client: agentdur.Runtime
) -> None:
    proc = workers.start("--grace", "20", QUEUE_APP_STEP="0.4")
    held = client.enqueue(queue_app.steps, "held", 4, queue="work")
    wait_for(lambda: ("held", 0) in {row[:2] for row in workers.lines()}, what="step 0")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    later = client.enqueue(queue_app.steps, "later", 1, queue="work")
    assert proc.wait(timeout=20) == 0

    run = client.get_run(held.run_id)
    assert (run.status, run.output, run.attempts) == ("SUCCEEDED", [0, 1, 2, 3], 1)
    assert client.get_run(later.run_id).status == "ENQUEUED"
    assert [row[:3] for row in workers.lines()] == [("held", i, proc.pid) for i in range(4)]


def test_sigterm_releases_a_slow_run_that_another_worker_finishes(
    workers: Workers, client: agentdur.Runtime
) -> None:
    first = workers.start("--grace", "0.2", QUEUE_APP_STEP="0.5")
    slow = client.enqueue(queue_app.steps, "slow", 6, queue="work")
    wait_for(lambda: ("slow", 1) in {row[:2] for row in workers.lines()}, what="step 1")
    started = time.monotonic()
    assert workers.stop(first) == 0
    assert time.monotonic() - started < 5

    released = client.get_run(slow.run_id)
    assert (released.status, released.owner) == ("PENDING", None)
    checkpointed = len(client.steps(slow.run_id))
    assert 1 <= checkpointed < 6
    _, err = workers.output(first)
    assert "released 1 unfinished runs" in err

    second = workers.start("--grace", "5")
    wait_for(lambda: all_finished(client, [slow]), timeout=20, what="the released run")
    assert workers.stop(second) == 0
    run = client.get_run(slow.run_id)
    assert (run.output, run.attempts) == (list(range(6)), 2)
    # Checkpointed steps were not executed again; only the one in flight at the release.
    executed = collections.Counter(index for _, index, _, _ in workers.lines())
    again = {index for index, n in executed.items() if n > 1}
    assert set(executed) == set(range(6))
    assert again <= {checkpointed} and max(executed.values()) <= 2
    by_second = {index for _, index, pid, _ in workers.lines() if pid == second.pid}
    assert by_second == set(range(checkpointed, 6))


def test_database_url_option_replaces_the_apps_database(
    tmp_path: Path, database_url: str, client: agentdur.Runtime
) -> None:
    group = Workers(f"sqlite:///{tmp_path}/missing-folder/app.db", tmp_path)
    try:
        proc = group.start("--database-url", database_url, "--queue", "work")
        handle = client.enqueue(queue_app.steps, "moved", 1, queue="work")
        assert handle.result(timeout=20) == [0]
        assert group.stop(proc) == 0
        out, _ = group.output(proc)
        assert f"worker {os.uname().nodename}:{proc.pid}:" in out and "serving work on" in out
        assert client.get_run(handle.run_id).attempts == 1
    finally:
        group.kill_all()


def test_worker_command_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert worker_main(["--app", "tests.apps.queue_app:rt", "--queue", "nope"]) == 2
    err = capsys.readouterr().err
    assert "queue 'nope' is not defined" in err
    assert "queues defined by tests.apps.queue_app:rt:" in err and "work" in err
    assert worker_main(["--app", f"no_such_module_{uuid.uuid4().hex}:rt"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert worker_main(["--app", "tests.apps.queue_app:nothing"]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err
    assert worker_main(["--app", APP, "--concurrency", "0"]) == 2
    assert "--concurrency" in capsys.readouterr().err
    assert worker_main([]) == 2
    assert "--app" in capsys.readouterr().err


def test_doc_pipeline_killed_and_restarted_summarises_each_document_once(
    database_url: str, tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS summaries")
    script = [sys.executable, str(ROOT / "examples" / "doc_pipeline.py")]
    options = ["--database-url", database_url, "--delay", "0.2"]
    docs = sorted(path.name for path in (ROOT / "examples" / "docs").glob("*.txt"))
    assert len(docs) == 12

    crashed = subprocess.run(
        [*script, *options, "--crash-after", "4"], capture_output=True, text=True, timeout=60
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "summarised in this process: SIGKILL" in crashed.stdout
    with agentdur.Runtime(database_url) as rt:
        before = {doc: rt.get_run(doc) for doc in docs}
        rows_before = summaries(database_url)
    done_before = {doc for doc, run in before.items() if run.status == "SUCCEEDED"}
    assert 4 <= len(done_before) < 12
    assert set(rows_before) >= done_before and max(rows_before.values()) == 1

    again = subprocess.run([*script, *options], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"{len(done_before)} of 12 already summarised by an earlier process" in again.stdout
    assert "[" + "#" * 30 + "] 12/12 summarised" in again.stdout
    rows = summaries(database_url)
    assert rows == {doc: 1 for doc in docs}  # each document summarised exactly once
    with agentdur.Runtime(database_url) as rt:
        for doc in docs:
            run = rt.get_run(doc)
            assert run.status == "SUCCEEDED"
            assert [s.kind for s in rt.steps(doc)] == ["step", "step", "transaction"]
            if doc in done_before:  # finished before the crash: not touched again
                assert (run.finished_at, run.attempts) == (before[doc].finished_at, 1)
            else:
                assert run.attempts == (2 if before[doc].attempts else 1)


def summaries(url: str) -> dict[str, int]:
    """How many rows the doc pipeline's table holds per document."""
    query = "SELECT doc, count(*) FROM summaries GROUP BY doc"
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return dict(conn.execute(query).fetchall())
    with psycopg.connect(url) as conn:
        return dict(conn.execute(query).fetchall())


def test_agentdur_worker_command(capsys: pytest.CaptureFixture[str]) -> None:
    from agentdur import cli

    assert cli.main(["worker", "--help"]) == 0
    assert "--app MODULE:ATTR" in capsys.readouterr().out
    assert cli.main(["worker", "--app", APP, "--queue", "nope"]) == 2
    assert "agentdur: error: queue 'nope' is not defined" in capsys.readouterr().err
    assert cli.main(["worker", "--app", APP, "--grace", "soon"]) == 2
    assert "expected seconds" in capsys.readouterr().err
