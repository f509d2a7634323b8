"""Database faults and concurrency, on real processes and a real database, no mocks.

Connections killed under running runs, the PostgreSQL server restarted, the SQLite write
lock held by another process past the busy timeout, transactional steps beside ordinary
runs and beyond the pool's size, and two processes with the default Runtime (one of them
SIGKILLed and restarted). What happened is read the way a user would: statuses from the
store, step executions from a log file each step body appends `run_id:k pid` to
(tests/apps/fault_app.py), the application's rows with plain SQL.

Every wait is bounded, so a broken runtime fails the test instead of hanging it.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

import agentdur
from tests.apps import fault_app
from tests.apps.effects_db import execute, is_sqlite, query
from tests.helpers import wait_for

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
APP = Path(__file__).parent / "apps" / "fault_app.py"


# -- helpers -------------------------------------------------------------------------------


def bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """`fn()` in a daemon thread; an AssertionError if it has not returned in `timeout` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"bounded: {what}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout}s (hung)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def executions(log: Path) -> collections.Counter[tuple[str, int]]:
    """How often each (run_id, k) step body ran, from the log."""
    return collections.Counter((rid, k) for rid, k, _ in log_lines(log))


def log_lines(log: Path) -> list[tuple[str, int, int]]:
    """(run_id, k, pid) per line of the log."""
    rows = []
    for line in log.read_text().splitlines():
        key, pid = line.split()
        run_id, _, k = key.rpartition(":")
        rows.append((run_id, int(k), int(pid)))
    return rows


def assert_each_body_ran_once(log: Path, expected: set[tuple[str, int]]) -> None:
    counts = executions(log)
    missing = sorted(expected - set(counts))
    extra = sorted(set(counts) - expected)
    twice = {key: n for key, n in sorted(counts.items()) if n > 1}
    assert not missing, f"{len(missing)} step bodies never ran, e.g. {missing[:5]}"
    assert not extra, f"unexpected step bodies ran: {extra[:5]}"
    assert not twice, f"{len(twice)} step bodies ran more than once, e.g. {list(twice.items())[:5]}"


def statuses(url: str, run_ids: list[str]) -> dict[str, str]:
    """Each run's status with plain SQL (a connection of its own, not the runtime's)."""
    rows = dict(query(url, "SELECT run_id, status FROM {p}runs"))
    return {run_id: rows.get(run_id, "<missing>") for run_id in run_ids}


def assert_all_succeeded(url: str, run_ids: list[str], errors: dict[str, str]) -> None:
    seen = statuses(url, run_ids)
    bad = {run_id: status for run_id, status in seen.items() if status != "SUCCEEDED"}
    assert not bad, (
        f"{len(bad)} of {len(run_ids)} runs did not succeed: "
        f"{collections.Counter(bad.values())}, e.g. {dict(list(bad.items())[:3])}; "
        f"errors seen by the caller: {dict(list(errors.items())[:3])}"
    )
    assert not errors, f"callers saw errors: {dict(list(errors.items())[:3])}"


def wait_results(handles: list[agentdur.RunHandle], timeout: float) -> dict[str, str]:
    """Wait for every handle within one overall deadline; {run_id: error} of the failures."""
    deadline = time.monotonic() + timeout
    errors: dict[str, str] = {}
    for handle in handles:
        try:
            handle.result(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            errors[handle.run_id] = f"{type(exc).__name__}: {exc}"
    return errors


def close(rt: agentdur.Runtime) -> None:
    bounded(rt.close, 30, "Runtime.close()")


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = 'agentdur' AND tablename = 'runs'"
        ).fetchone()
        if exists:
            conn.execute(
                "TRUNCATE agentdur.runs, agentdur.steps, agentdur.effects, "
                "agentdur.messages, agentdur.executors"
            )


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied."""
    _truncate(postgres_url)
    return postgres_url


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    """The step log of this test, for step bodies executing in the test process."""
    path = tmp_path / "bodies.log"
    path.touch()
    fault_app.log_to(path)
    yield path
    fault_app.log_to(os.devnull)


def app_table(url: str) -> None:
    if not is_sqlite(url):
        execute(url, "DROP TABLE IF EXISTS public.fault_rows")
    execute(url, fault_app.TABLE_DDL)


def app_rows(url: str) -> collections.Counter[tuple[str, int]]:
    return collections.Counter(
        (run_id, k) for run_id, k in query(url, "SELECT run_id, k FROM fault_rows")
    )


class BackendKiller(threading.Thread):
    """Terminates every client connection to one database every `every` seconds.

    Its own connection is spared (`pid <> pg_backend_pid()`). It stops when told, or by
    itself after `limit` seconds.
    """

    def __init__(self, url: str, every: float = 0.2, limit: float = 60.0) -> None:
        super().__init__(daemon=True, name="backend-killer")
        self.url = url
        self.every = every
        self.limit = limit
        self.killed = 0
        self.rounds = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                dbname = conn.info.dbname
                while not self._stop_event.wait(self.every) and time.monotonic() < deadline:
                    rows = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid() "
                        "AND backend_type = 'client backend'",
                        (dbname,),
                    ).fetchall()
                    self.killed += sum(1 for (done,) in rows if done)
                    self.rounds += 1
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        assert not self.is_alive(), "the killer thread did not stop"


# -- 1. PostgreSQL connections terminated every 200 ms ---------------------------------------


@pytest.mark.postgres
def test_connections_terminated_every_200ms_lose_no_run_and_repeat_no_step(
    pg_url: str, log: Path
) -> None:
    n_runs, n_steps = 100, 10
    ids = [f"kill-{i:03d}" for i in range(n_runs)]
    rt = agentdur.Runtime(pg_url, executor_id="faults-kill")
    bounded(rt.open, 30, "Runtime.open()")
    killer = BackendKiller(pg_url, every=0.2, limit=70)
    try:
        # The runs are started before the killing begins (a failed start raises to the
        # caller, which may retry with the same run id); each run lasts >= 2.5 s, so every
        # one of them is under fire while it executes.
        handles = bounded(
            lambda: [rt.start(fault_app.steps, rid, n_steps, 0.25, run_id=rid) for rid in ids],
            30,
            "starting 100 runs",
        )
        killer.start()
        errors = wait_results(handles, timeout=60)
    finally:
        killer.stop()
        close(rt)
    assert killer.error is None, f"the killer failed: {killer.error!r}"
    assert killer.killed > 0, "no connection was terminated: the test tested nothing"
    assert_all_succeeded(pg_url, ids, errors)
    assert_each_body_ran_once(log, {(rid, k) for rid in ids for k in range(n_steps)})


# -- 2. PostgreSQL server restarted mid-batch ------------------------------------------------


def _server_address(url: str) -> tuple[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(url)
    return str(info.get("host") or "127.0.0.1"), str(info.get("port") or "5432")


def _wait_server_up(host: str, port: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run(
            ["pg_isready", "-h", host, "-p", port, "-t", "2"], capture_output=True, timeout=10
        )
        if ready.returncode == 0:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restart_mid_batch_loses_no_run_and_repeats_no_step(
    pg_url: str, log: Path
) -> None:
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster is not on PATH: cannot restart the server")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    restart = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]
    host, port = _server_address(pg_url)
    n_runs, n_steps = 50, 10
    ids = [f"restart-{i:02d}" for i in range(n_runs)]
    rt = agentdur.Runtime(pg_url, executor_id="faults-restart")
    try:
        bounded(rt.open, 30, "Runtime.open()")
        handles = bounded(
            lambda: [rt.start(fault_app.steps, rid, n_steps, 0.2, run_id=rid) for rid in ids],
            30,
            "starting 50 runs",
        )
        # Mid-batch: every run has begun, none can have finished (10 steps of 0.2 s).
        wait_for(lambda: len(log_lines(log)) >= 2 * n_runs, timeout=30, what="two steps a run")
        assert len(executions(log)) < n_runs * n_steps
        done = subprocess.run(restart, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"pg_ctlcluster restart failed: {done.stderr}"
        errors = wait_results(handles, timeout=60)
    finally:
        try:
            if not _wait_server_up(host, port, 30):
                subprocess.run([*restart[:-1], "start"], capture_output=True, timeout=120)
                assert _wait_server_up(host, port, 60), "PostgreSQL did not come back"
        finally:
            close(rt)
    assert_all_succeeded(pg_url, ids, errors)
    assert_each_body_ran_once(log, {(rid, k) for rid in ids for k in range(n_steps)})


# -- 3. SQLite write lock held by another process past the busy timeout ----------------------

LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def test_sqlite_write_lock_held_past_the_busy_timeout_makes_runs_wait(
    tmp_path: Path, log: Path
) -> None:
    path = tmp_path / "agentdur.db"
    plain_url = f"sqlite:///{path}"
    n_runs, n_steps, hold = 10, 20, 2.0
    ids = [f"lock-{i:02d}" for i in range(n_runs)]
    rt = agentdur.Runtime(f"{plain_url}?busy_timeout=0.2", executor_id="faults-lock")
    holder: subprocess.Popen[str] | None = None
    holder_out = tmp_path / "holder.out"
    try:
        bounded(rt.open, 30, "Runtime.open()")
        tables = query(plain_url, "SELECT count(*) FROM sqlite_master WHERE name = 'runs'")
        assert tables == [(1,)], (
            f"the Runtime did not open {path}: is the URL parameter ?busy_timeout= understood? "
            f"(files there: {sorted(p.name for p in tmp_path.iterdir())})"
        )
        handles = bounded(
            lambda: [rt.start(fault_app.steps, rid, n_steps, 0.1, run_id=rid) for rid in ids],
            30,
            "starting 10 runs",
        )
        wait_for(lambda: len(log_lines(log)) >= n_runs, timeout=30, what="every run to begin")
        with open(holder_out, "w") as out:
            holder = subprocess.Popen(
                [sys.executable, "-c", LOCK_HOLDER, str(path), str(hold)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_for(lambda: "locked" in holder_out.read_text(), timeout=30, what="the lock")
        ran_when_locked = len(log_lines(log))
        assert holder.wait(timeout=60) == 0, holder_out.read_text()
        assert "released" in holder_out.read_text()
        errors = wait_results(handles, timeout=60)
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait(10)
        close(rt)
    # The lock was taken while the runs were executing (20 steps of 0.1 s each).
    assert ran_when_locked < n_runs * n_steps
    assert_all_succeeded(plain_url, ids, errors)
    assert_each_body_ran_once(log, {(rid, k) for rid in ids for k in range(n_steps)})


# -- 4. a sync transactional step beside 10 concurrent runs ----------------------------------


def test_sync_transaction_step_beside_ten_concurrent_runs_all_finish(
    database_url: str, log: Path
) -> None:
    app_table(database_url)
    tx_steps, n_runs, n_steps = 3, 10, 5
    ids = [f"beside-{i:02d}" for i in range(n_runs)]
    rt = agentdur.Runtime(database_url, executor_id="faults-tx")
    try:
        bounded(rt.open, 30, "Runtime.open()")

        def start_all() -> list[agentdur.RunHandle]:
            # Each transaction holds its connection (on SQLite: the write lock) 0.3 s
            # while the ten runs checkpoint beside it.
            tx = rt.start(fault_app.sync_tx, "tx-sync", tx_steps, 0.3, run_id="tx-sync")
            return [tx] + [rt.start(fault_app.steps, rid, n_steps, 0.05, run_id=rid) for rid in ids]

        handles = bounded(start_all, 30, "starting the runs")
        errors = wait_results(handles, timeout=60)
    finally:
        close(rt)
    assert_all_succeeded(database_url, ["tx-sync", *ids], errors)
    expected_tx = {("tx-sync", k) for k in range(tx_steps)}
    assert app_rows(database_url) == collections.Counter(expected_tx)
    assert_each_body_ran_once(log, expected_tx | {(rid, k) for rid in ids for k in range(n_steps)})


# -- 5. more concurrent async transaction steps than pooled connections ----------------------


@pytest.mark.postgres
def test_twenty_concurrent_async_transaction_steps_on_a_pool_of_ten(pg_url: str, log: Path) -> None:
    app_table(pg_url)
    ids = [f"pool-{i:02d}" for i in range(20)]
    rt = agentdur.Runtime(pg_url, executor_id="faults-pool")
    try:
        bounded(rt.open, 30, "Runtime.open()")
        # Each step holds its transaction 0.3 s, awaiting: all 20 want a connection at once.
        handles = bounded(
            lambda: [rt.start(fault_app.async_tx, rid, 0.3, run_id=rid) for rid in ids],
            30,
            "starting 20 runs",
        )
        errors = wait_results(handles, timeout=60)
    finally:
        close(rt)
    assert_all_succeeded(pg_url, ids, errors)
    assert app_rows(pg_url) == collections.Counter({(rid, 0): 1 for rid in ids})
    assert_each_body_ran_once(log, {(rid, 0) for rid in ids})


# -- 6. two processes with the default Runtime; one SIGKILLed and restarted ------------------

BATCH, STEPS, STEP_SECONDS = 50, 12, 0.25


class Batch:
    """`fault_app.py batch` processes of one test (default Runtime, recover=True)."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.log = folder / "bodies.log"
        self.log.touch()
        self.procs: list[subprocess.Popen[str]] = []
        # No executor id anywhere: each process must be told apart by the defaults.
        self.env = {k: v for k, v in os.environ.items() if k != "AGENTDUR_EXECUTOR_ID"}

    def spawn(self, prefix: str) -> subprocess.Popen[str]:
        n = len(self.procs)
        command = [sys.executable, str(APP), "batch", self.url, str(self.log), prefix]
        command += [str(BATCH), str(STEPS), str(STEP_SECONDS)]
        with (
            open(self.folder / f"proc{n}.out", "w") as out,
            open(self.folder / f"proc{n}.err", "w") as err,
        ):
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        n = self.procs.index(proc)
        out = (self.folder / f"proc{n}.out").read_text()
        err = (self.folder / f"proc{n}.err").read_text()
        return f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"

    def lines_of(self, pid: int) -> int:
        return sum(1 for _, _, p in log_lines(self.log) if p == pid)

    def wait_lines(self, proc: subprocess.Popen[str], n: int, what: str) -> None:
        def enough() -> bool:
            done = self.lines_of(proc.pid)
            assert done >= n or proc.poll() is None, (
                f"process {proc.pid} exited ({proc.returncode}) having executed {done} step "
                f"bodies, before {what} ({n}); did another process take its runs?\n"
                + self.output(proc)
            )
            return done >= n

        wait_for(enough, timeout=30, what=what)

    def finish(self, proc: subprocess.Popen[str]) -> None:
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process {proc.pid} did not finish: {self.output(proc)}"
            ) from None
        assert code == 0, self.output(proc)
        assert '"ok"' in self.output(proc), self.output(proc)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def batch(database_url: str, tmp_path: Path) -> Iterator[Batch]:
    group = Batch(database_url, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


def ids_of(prefix: str) -> list[str]:
    return [fault_app.run_id_of(prefix, i) for i in range(BATCH)]


@pytest.mark.slow
def test_two_default_runtimes_on_one_database_never_run_a_step_twice(
    batch: Batch, database_url: str
) -> None:
    a = batch.spawn("a")
    # B opens (and recovers) while A's runs are in flight: it must not take them.
    batch.wait_lines(a, BATCH, "A's runs to begin")
    b = batch.spawn("b")
    batch.finish(a)
    batch.finish(b)
    ids = ids_of("a") + ids_of("b")
    assert_all_succeeded(database_url, ids, {})
    assert_each_body_ran_once(batch.log, {(rid, k) for rid in ids for k in range(STEPS)})
    pids = {prefix: {p for r, _, p in log_lines(batch.log) if r[0] == prefix} for prefix in "ab"}
    assert pids == {"a": {a.pid}, "b": {b.pid}}, "each process executes only its own runs"


@pytest.mark.slow
def test_sigkilled_default_runtime_restarted_resumes_its_runs_at_once(
    batch: Batch, database_url: str
) -> None:
    a = batch.spawn("a")
    batch.wait_lines(a, BATCH, "A's runs to begin")
    b = batch.spawn("b")
    batch.wait_lines(b, BATCH, "B's runs to begin")
    batch.wait_lines(a, 3 * BATCH, "A's runs to be a few steps in")
    a.send_signal(signal.SIGKILL)
    assert a.wait(timeout=10) == -signal.SIGKILL

    # What A had done: the steps of each of its runs it began, in order (a run's steps are
    # sequential, and a step returns only once its checkpoint is committed).
    began: dict[str, list[int]] = collections.defaultdict(list)
    for rid, k, pid in log_lines(batch.log):
        if pid == a.pid:
            began[rid].append(k)
    unfinished = [rid for rid, s in statuses(database_url, ids_of("a")).items() if s != "SUCCEEDED"]
    assert unfinished, "A had finished every run before the kill: the test tested nothing"
    # Left to do after the restart, at most: the rest of the least advanced unfinished run,
    # from its step in flight on.
    remaining = max(STEPS - max(began.get(rid, [0])) for rid in unfinished) * STEP_SECONDS

    restarted_at = time.time()
    a2 = batch.spawn("a")  # the same command
    ids = ids_of("a") + ids_of("b")
    reader = agentdur.Runtime(database_url)
    try:
        try:
            wait_for(
                lambda: set(statuses(database_url, ids).values()) == {"SUCCEEDED"},
                timeout=40,
                what="all 100 runs to succeed",
            )
        except AssertionError:
            left = {r: s for r, s in statuses(database_url, ids).items() if s != "SUCCEEDED"}
            raise AssertionError(
                f"{len(left)} runs not SUCCEEDED 40 s after the restart: "
                f"{collections.Counter(left.values())}\nrestarted A: {batch.output(a2)}"
            ) from None
        finished = [reader.get_run(rid).finished_at for rid in unfinished]
    finally:
        close(reader)
    batch.finish(a2)
    batch.finish(b)

    # The restarted process (or B, which sees A dead too) took A's runs over at once, not
    # after their 30 s lease: the remaining work plus start-up, far less than a lease,
    # even on a slow machine.
    assert all(f is not None for f in finished)
    took = max(f.timestamp() for f in finished if f is not None) - restarted_at
    lease = 30.0
    assert took <= remaining + lease / 3, (
        f"A's unfinished runs finished {took:.1f} s after the restart; expected within "
        f"{remaining:.2f} s of remaining work plus start-up, well before the {lease:.0f} s "
        "lease expired"
    )

    # Executions, from the log. Plain steps are at-least-once across a crash: a step whose
    # body was executing at the SIGKILL recorded nothing, so it runs again on resume. That
    # can only be, in each of A's runs, the LAST step A began (every earlier step of that
    # run had returned, hence been recorded, before A began the next one). B (recover=True)
    # may take some of A's runs once A is dead and leave them with a step in flight when it
    # closes after its own runs (a closed Runtime's runs are resumed by another process):
    # that step, the last B began in that run, may run again too. So:
    #   - B's runs: every step body exactly once (the kill did not touch them);
    #   - A's runs: every step body at least once; exactly once, except the last step A
    #     (or B) began in each run, which may have run twice (once by it, once after);
    #   - nothing recorded ran again, and nothing ran three times.
    counts = executions(batch.log)
    expected = {(rid, k) for rid in ids for k in range(STEPS)}
    assert set(counts) == expected, sorted(expected ^ set(counts))[:5]
    last_began: dict[tuple[int, str], int] = {}
    for rid, k, pid in log_lines(batch.log):
        last_began[(pid, rid)] = k
    in_flight = {(rid, k): pid for (pid, rid), k in last_began.items() if pid in (a.pid, b.pid)}
    twice = {key: n for key, n in counts.items() if n > 1}
    assert set(twice) <= set(in_flight), {k: n for k, n in twice.items() if k not in in_flight}
    assert set(twice.values()) <= {2}, twice
    for key in twice:
        pids = [pid for rid, k, pid in log_lines(batch.log) if (rid, k) == key]
        assert pids[0] in (a.pid, b.pid) and pids[1] != pids[0], (key, pids)  # before, after
        assert pids[0] == a.pid or key[0] in ids_of("a"), (key, pids)  # B's own: once
