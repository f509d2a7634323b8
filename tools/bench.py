"""agentdur benchmarks: `python tools/bench.py <benchmark> [options]`.

Benchmarks:
  steps   per-step overhead of a durable workflow of trivial async steps, on SQLite and
          PostgreSQL, next to the floor (one bare durable commit on the same backend).
  queue   throughput of 2,000 one-step runs with 1, 2 and 4 `agentdur worker` processes,
          pick-up latency of an idle worker, time to recover 10,000 runs of a dead worker.
  (agent and replay live in bench_agent.py, concurrency in bench_concurrency.py, ui in
  bench_ui.py; add each as
  a function registered with @benchmark.)

Each benchmark is one function registered with `@benchmark`; they share `time_runs` (warm-up,
then N timed runs, median) and print a table, or JSON with `--json`. Results are written
down in BENCHMARKS.md with the machine they were measured on.

PostgreSQL comes from `--postgres-url`, else AGENTDUR_BENCH_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/agentdur_bench (created if missing). The benchmark
drops and recreates the schema `agentdur` in that database (and the scratch schema
`agentdur_bench`): point it at a database you do not mind losing those schemas in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.metadata
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg.sql

import agentdur

T = TypeVar("T")

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/agentdur_bench"
BACKENDS = ("sqlite", "postgres")
TARGETS_US = {"sqlite": 300.0, "postgres": 400.0}
"""Per-step overhead the project aims for (BENCHMARKS.md, DESIGN.md semantics 8)."""

# -- shared helpers ----------------------------------------------------------------------


def time_runs(
    run: Callable[..., Any],
    *,
    runs: int,
    warmup: int,
    setup: Callable[[], Any] | None = None,
    teardown: Callable[[Any], None] | None = None,
) -> list[float]:
    """Seconds taken by each of `runs` timed calls of `run`, after `warmup` untimed ones.

    `setup` (untimed) makes a fresh state before each call and is passed to `run` when
    given; `teardown` (untimed) receives it afterwards.
    """
    times: list[float] = []
    for i in range(warmup + runs):
        state = setup() if setup is not None else None
        try:
            start = time.perf_counter()
            if setup is not None:
                run(state)
            else:
                run()
            elapsed = time.perf_counter() - start
        finally:
            if teardown is not None:
                teardown(state)
        if i >= warmup:
            times.append(elapsed)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


class LoopThread:
    """A plain asyncio loop in a thread, so the baseline pays the same thread hop as rt.run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def postgres_url(args: argparse.Namespace) -> str:
    url = str(
        args.postgres_url or os.environ.get("AGENTDUR_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    )
    ensure_database(url)
    return url


def ensure_database(url: str) -> None:
    """Create the benchmark's own database on first use (it never shares one)."""
    base, _, name = url.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
                )
    except psycopg.Error:
        pass  # reported when the benchmark connects


def drop_postgres_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def temp_sqlite_path() -> Any:
    """A path for a new SQLite file in a fresh temporary folder (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="agentdur-bench-") as folder:
        yield str(Path(folder) / "bench.db")


class LoopProfiler:
    """cProfile of the runtimes' loop threads, where workflows and their steps execute.

    cProfile measures one thread at a time, so it is switched on inside the runtime's
    loop; `attach`/`detach` around the timed calls, then `dump` (all runs accumulate).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profiler = cProfile.Profile() if path else None

    def _in_loop(self, rt: agentdur.Runtime, fn: Callable[[], None]) -> None:
        loop = rt._loop_thread().loop  # bench-only peek at the runtime's loop
        done = threading.Event()

        def call() -> None:
            fn()
            done.set()

        loop.call_soon_threadsafe(call)
        done.wait()

    def attach(self, rt: agentdur.Runtime) -> None:
        if self.profiler is not None:
            self._in_loop(rt, self.profiler.enable)

    def detach(self, rt: agentdur.Runtime) -> None:
        if self.profiler is not None:
            self._in_loop(rt, self.profiler.disable)

    def dump(self) -> None:
        if self.profiler is not None and self.path is not None:
            self.profiler.dump_stats(self.path)


def rounded(data: Any) -> Any:
    """Floats rounded to 0.001 for JSON output, recursively."""
    if isinstance(data, float):
        return round(data, 3)
    if isinstance(data, dict):
        return {key: rounded(value) for key, value in data.items()}
    if isinstance(data, list):
        return [rounded(value) for value in data]
    return data


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare a result with another machine's."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "agentdur": _agentdur_version(),
    }


def _agentdur_version() -> str | None:
    """The installed version, plus the git commit (and "+dirty") of a checkout."""
    try:
        version = importlib.metadata.version("agentdur")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(agentdur.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "agentdur"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return version
    return f"{version} ({commit}{'+dirty' if dirty else ''})"


# -- the `steps` benchmark ---------------------------------------------------------------


@agentdur.step(name="bench.noop")
async def noop(i: int) -> int:
    return i


async def plain_noop(i: int) -> int:
    return i


@agentdur.workflow(name="bench.steps")
async def steps_workflow(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


async def plain_steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await plain_noop(i)
    return total


@dataclass
class StepsResult:
    backend: str
    steps: int
    runs: int
    durable_ms: float
    """Median wall time of `rt.run(steps_workflow, steps)`, start and finish writes included."""
    plain_ms: float
    """Median wall time of the same loop over the plain function on a plain loop thread."""
    overhead_us_per_step: float
    """(durable - plain) / steps, medians over the runs."""
    empty_run_ms: float
    """Median wall time of a run with 0 steps: its start and finish writes and thread hops."""
    marginal_us_per_step: float
    """(durable - empty run) / steps: the cost of one more step, the run's fixed cost removed."""
    floor_us: float
    """Median time of one bare durable commit (an autocommit INSERT) on the backend."""
    target_us: float
    overhead_runs_us: list[float] = field(default_factory=list)
    """Per-run overhead: each durable run minus the median plain run, divided by steps."""
    settings: dict[str, Any] = field(default_factory=dict)


def sqlite_floor(*, commits: int, runs: int, warmup: int) -> tuple[float, dict[str, Any]]:
    """Median seconds of one autocommit INSERT on a new WAL, synchronous=FULL SQLite file."""
    samples: list[float] = []
    with temp_sqlite_path() as path:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                conn.execute("PRAGMA synchronous").fetchone()[0]
            )
            conn.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            for r in range(warmup + runs):
                for i in range(commits):
                    start = time.perf_counter()
                    conn.execute("INSERT INTO scratch (v) VALUES (?)", (f"{r}:{i}",))
                    elapsed = time.perf_counter() - start
                    if r >= warmup:
                        samples.append(elapsed)
        finally:
            conn.close()
    return median(samples), {"journal_mode": mode, "synchronous": sync}


def postgres_floor(
    url: str, *, commits: int, runs: int, warmup: int
) -> tuple[float, dict[str, Any]]:
    """Median seconds of one autocommit INSERT over psycopg into a logged scratch table."""
    samples: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "server_version")
        }
        conn.execute("DROP SCHEMA IF EXISTS agentdur_bench CASCADE")
        conn.execute("CREATE SCHEMA agentdur_bench")
        conn.execute(
            "CREATE TABLE agentdur_bench.scratch (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)"
        )
        try:
            with conn.cursor() as cur:
                for r in range(warmup + runs):
                    for i in range(commits):
                        start = time.perf_counter()
                        cur.execute(
                            "INSERT INTO agentdur_bench.scratch (v) VALUES (%s)", (f"{r}:{i}",)
                        )
                        elapsed = time.perf_counter() - start
                        if r >= warmup:
                            samples.append(elapsed)
        finally:
            conn.execute("DROP SCHEMA IF EXISTS agentdur_bench CASCADE")
    return median(samples), settings


def steps_on_backend(backend: str, args: argparse.Namespace, plain_s: float) -> StepsResult:
    n, runs, warmup = args.steps, args.runs, args.warmup
    profiler = LoopProfiler(f"{args.profile}-{backend}.prof" if args.profile else None)

    def run(rt: agentdur.Runtime, count: int) -> None:
        if count:
            profiler.attach(rt)
        try:
            assert rt.run(steps_workflow, count) == count * (count - 1) // 2
        finally:
            if count:
                profiler.detach(rt)

    if backend == "sqlite":
        floor_s, settings = sqlite_floor(commits=n, runs=runs, warmup=warmup)

        def fresh() -> tuple[agentdur.Runtime, tempfile.TemporaryDirectory[str]]:
            # A new database file per run, migrated (untimed) when the runtime opens.
            folder = tempfile.TemporaryDirectory(prefix="agentdur-bench-")
            return agentdur.Runtime(f"sqlite:///{folder.name}/bench.db").open(), folder

        def close(state: tuple[agentdur.Runtime, tempfile.TemporaryDirectory[str]]) -> None:
            state[0].close()
            state[1].cleanup()

        def times(count: int) -> list[float]:
            return time_runs(
                lambda state: run(state[0], count),
                runs=runs,
                warmup=warmup,
                setup=fresh,
                teardown=close,
            )

        durable, empty = times(n), times(0)
    else:
        url = postgres_url(args)
        floor_s, settings = postgres_floor(url, commits=n, runs=runs, warmup=warmup)
        drop_postgres_schema(url, "agentdur")  # migrations apply fresh when rt opens
        try:
            with agentdur.Runtime(url, executor_id=f"bench-{uuid.uuid4().hex[:8]}") as rt:
                durable = time_runs(lambda: run(rt, n), runs=runs, warmup=warmup)
                empty = time_runs(lambda: run(rt, 0), runs=runs, warmup=warmup)
        finally:
            drop_postgres_schema(url, "agentdur")
    profiler.dump()

    durable_s, empty_s = median(durable), median(empty)
    return StepsResult(
        backend=backend,
        steps=n,
        runs=runs,
        durable_ms=durable_s * 1e3,
        plain_ms=plain_s * 1e3,
        overhead_us_per_step=(durable_s - plain_s) / n * 1e6,
        empty_run_ms=empty_s * 1e3,
        marginal_us_per_step=(durable_s - empty_s) / n * 1e6,
        floor_us=floor_s * 1e6,
        target_us=TARGETS_US[backend],
        overhead_runs_us=[round((t - plain_s) / n * 1e6, 1) for t in durable],
        settings=settings,
    )


# -- registry and CLI --------------------------------------------------------------------

Benchmark = Callable[[argparse.Namespace], dict[str, Any]]
BENCHMARKS: dict[str, tuple[Benchmark, Callable[[argparse.ArgumentParser], None], str]] = {}


def benchmark(
    name: str, *, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark function as the subcommand `name`.

    The function takes the parsed arguments and returns a JSON-able dict with at least
    "results" (a list of dicts) and "text" (the human-readable report, not put in JSON).
    """

    def register(fn: Benchmark) -> Benchmark:
        BENCHMARKS[name] = (fn, arguments, help)
        return fn

    return register


def _steps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "all"),
        default="all",
        help="which store to measure (default all)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="write a cProfile of the runtime's loop thread during the durable runs to "
        "PREFIX-<backend>.prof (read it with `python -m pstats`); it inflates the timings",
    )


@benchmark("steps", help="per-step overhead of trivial durable steps", arguments=_steps_arguments)
def bench_steps(args: argparse.Namespace) -> dict[str, Any]:
    n, runs, warmup = args.steps, args.runs, args.warmup
    if n < 1:
        raise SystemExit("--steps must be at least 1")
    plain_loop = LoopThread()
    try:
        plain = time_runs(lambda: plain_loop.run(plain_steps(n)), runs=runs, warmup=warmup)
    finally:
        plain_loop.close()
    plain_s = median(plain)

    backends = BACKENDS if args.backend == "all" else (args.backend,)
    results: list[StepsResult] = []
    skipped: dict[str, str] = {}
    for backend in backends:
        try:
            results.append(steps_on_backend(backend, args, plain_s))
        except (agentdur.StoreUnavailable, psycopg.OperationalError) as exc:
            if backend != "postgres":
                raise
            detail = " ".join(str(exc).split())
            skipped[backend] = f"PostgreSQL unavailable: {type(exc).__name__}: {detail}"

    lines = [
        f"steps: {n} trivial async steps per run, median of {runs} runs after {warmup} warm-up",
        "overhead = (rt.run time - plain loop time) / steps; rt.run includes the run's start",
        "and finish writes and the hop to the runtime's loop thread (shown as 'empty run').",
        "marginal = (rt.run time - empty run time) / steps: the run's fixed cost removed.",
        "",
        f"{'backend':<9} {'durable ms':>10} {'plain ms':>9} {'overhead µs/step':>17} "
        f"{'marginal µs/step':>17} {'empty run ms':>13} {'floor µs':>9} {'target µs':>10}",
    ]
    for r in results:
        lines.append(
            f"{r.backend:<9} {r.durable_ms:>10.1f} {r.plain_ms:>9.2f} "
            f"{r.overhead_us_per_step:>17.0f} {r.marginal_us_per_step:>17.0f} "
            f"{r.empty_run_ms:>13.2f} {r.floor_us:>9.0f} {r.target_us:>10.0f}"
        )
    for backend, reason in skipped.items():
        lines.append(f"{backend:<9} skipped: {reason}")
    lines.append("")
    lines.append("floor: median of one autocommit INSERT on the same backend and settings")
    for r in results:
        settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        lines.append(f"  {r.backend}: {settings}")
        lines.append(f"  {r.backend} per-run overhead µs/step: {r.overhead_runs_us}")
    return {
        "results": [rounded(asdict(r)) for r in results],
        "skipped": skipped,
        "text": "\n".join(lines),
    }


# -- the `queue` benchmark ---------------------------------------------------------------

QUEUE_NAME = "bench.queue"
BENCH_QUEUE = agentdur.Queue(QUEUE_NAME)  # registered here, found by the workers by name


@agentdur.workflow(name="bench.queue_one_step")
async def queue_one_step(i: int) -> int:
    return await noop(i)


def queue_app() -> agentdur.Runtime:
    """The application the queue benchmark's workers load: `--app bench:queue_app`."""
    return agentdur.Runtime(os.environ["AGENTDUR_BENCH_QUEUE_URL"])


def _queue_database(backend: str, args: argparse.Namespace, folder: str) -> str:
    """An empty, migrated database: a new SQLite file, or the agentdur schema recreated."""
    if backend == "sqlite":
        url = f"sqlite:///{folder}/queue-{uuid.uuid4().hex[:8]}.db"
    else:
        url = postgres_url(args)
        drop_postgres_schema(url, "agentdur")
    agentdur.Runtime(url)._ensure_store().close()  # migrate before any timer starts
    return url


def _count_status(url: str, status: str) -> int:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            row = conn.execute("SELECT count(*) FROM runs WHERE status = ?", (status,))
            return int(row.fetchone()[0])
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT count(*) FROM agentdur.runs WHERE status = %s", (status,))
        return int(found.fetchone()[0])  # type: ignore[index]


def _wait_for_status(url: str, status: str, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while _count_status(url, status) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"queue benchmark: {count} runs not {status} after {timeout:.0f}s")
        time.sleep(0.01)


@contextmanager
def queue_workers(url: str, n: int, concurrency: int, folder: str) -> Any:
    """n `agentdur worker` processes serving the benchmark queue, ready when yielded."""
    env = {**os.environ, "AGENTDUR_BENCH_QUEUE_URL": url}
    command = [
        sys.executable, "-m", "agentdur.cli", "worker", "--app", "bench:queue_app",
        "--queue", QUEUE_NAME, "--concurrency", str(concurrency), "--grace", "5",
    ]  # fmt: skip
    procs = []
    try:
        for i in range(n):
            with open(Path(folder) / f"worker{i}.err", "a") as err:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=Path(__file__).resolve().parent,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for proc in procs:
            assert proc.stdout is not None
            if "serving" not in proc.stdout.readline():
                raise SystemExit(f"queue benchmark: a worker did not start (see {folder})")
        time.sleep(0.5)  # past their first claim and recovery round: idle
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class QueueThroughput:
    backend: str
    workers: int
    runs: int
    enqueue_s: float
    """Median seconds to enqueue the runs (one `rt.enqueue` each, from one thread)."""
    total_s: float
    """Median seconds from the first enqueue until every run SUCCEEDED."""
    runs_per_s: float
    totals_s: list[float] = field(default_factory=list)


def queue_throughput(
    backend: str, workers: int, args: argparse.Namespace, folder: str
) -> QueueThroughput:
    enqueue: list[float] = []
    total: list[float] = []
    for i in range(args.warmup + args.runs):
        url = _queue_database(backend, args, folder)
        with (
            queue_workers(url, workers, args.worker_concurrency, folder),
            agentdur.Runtime(url, executor_id="bench-enqueuer") as rt,
        ):
            start = time.perf_counter()
            for n in range(args.count):
                rt.enqueue(queue_one_step, n, queue=QUEUE_NAME)
            enqueued = time.perf_counter() - start
            _wait_for_status(url, "SUCCEEDED", args.count)
            elapsed = time.perf_counter() - start
        if i >= args.warmup:
            enqueue.append(enqueued)
            total.append(elapsed)
    return QueueThroughput(
        backend=backend,
        workers=workers,
        runs=args.count,
        enqueue_s=median(enqueue),
        total_s=median(total),
        runs_per_s=args.count / median(total),
        totals_s=total,
    )


def queue_latency(backend: str, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """Enqueue → started_at of single runs, each enqueued while the one worker is idle."""
    url = _queue_database(backend, args, folder)
    samples: list[float] = []
    with (
        queue_workers(url, 1, args.worker_concurrency, folder),
        agentdur.Runtime(url, executor_id="bench-enqueuer") as rt,
    ):
        for n in range(args.latency_samples):
            time.sleep(0.2 + 0.2 * (n % 5) / 5)  # let the worker go idle, at varied phases
            handle = rt.enqueue(queue_one_step, n, queue=QUEUE_NAME)
            handle.result(timeout=60)
            run = rt.get_run(handle.run_id)
            assert run.started_at is not None
            samples.append((run.started_at - run.created_at).total_seconds())
    samples.sort()
    return {
        "backend": backend,
        "samples": len(samples),
        "median_ms": median(samples) * 1e3,
        "p90_ms": samples[int(0.9 * (len(samples) - 1))] * 1e3,
        "max_ms": samples[-1] * 1e3,
    }


def queue_recovery(backend: str, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """`rt.recover()` over N RUNNING runs of a dead executor whose leases expired."""
    url = _queue_database(backend, args, folder)
    n = args.recover_count
    with agentdur.Runtime(url, executor_id="bench-recoverer") as rt:
        store = rt.store
        now = rt.clock()
        expired = now - timedelta(minutes=5)
        rows = []
        for i in range(n):
            info = agentdur.RunInfo(
                run_id=f"dead-{i:06d}",
                workflow=queue_one_step.name,
                status="RUNNING",
                input=queue_one_step.encode_input((i,), {}),
                queue=QUEUE_NAME,
                owner="dead-executor",
                lease_until=expired,
                epoch=1,
                attempts=1,
                created_at=expired,
                started_at=expired,
            )
            params = store._run_params(info)
            params["input"] = store._json_param(json.dumps(info.input))
            rows.append(params)
        with store.transaction() as cur:
            cur.executemany(store.sql.CREATE_RUN, rows)
        start = time.perf_counter()
        handles = rt.recover()
        claimed = time.perf_counter() - start
        _wait_for_status(url, "SUCCEEDED", n)
        finished = time.perf_counter() - start
    assert len(handles) == n, (len(handles), n)
    return {
        "backend": backend,
        "runs": n,
        "claimed_s": claimed,
        "finished_s": finished,
        "runs_per_s": n / finished,
    }


def _queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=2000, help="runs per throughput test")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker process counts to measure (default 1,2,4)"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=100,
        help="`agentdur worker --concurrency` of each worker (default 100)",
    )
    parser.add_argument("--latency-samples", type=int, default=40, help="default 40")
    parser.add_argument("--recover-count", type=int, default=10_000, help="default 10000")
    parser.add_argument(
        "--only",
        choices=("throughput", "latency", "recovery", "all"),
        default="all",
        help="which part to measure (default all)",
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")


@benchmark(
    "queue",
    help="queue throughput with 1/2/4 worker processes, pick-up latency, mass recovery",
    arguments=_queue_arguments,
)
def bench_queue(args: argparse.Namespace) -> dict[str, Any]:
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    counts = [int(n) for n in args.workers.split(",")]
    throughput: list[QueueThroughput] = []
    latency: list[dict[str, Any]] = []
    recovery: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentdur-bench-queue-") as folder:
        for backend in backends:
            if args.only in ("throughput", "all"):
                throughput += [queue_throughput(backend, n, args, folder) for n in counts]
            if args.only in ("latency", "all"):
                latency.append(queue_latency(backend, args, folder))
            if args.only in ("recovery", "all"):
                recovery.append(queue_recovery(backend, args, folder))
        if "postgres" in backends:
            drop_postgres_schema(postgres_url(args), "agentdur")

    lines: list[str] = []
    if throughput:
        lines += [
            f"throughput: {args.count} one-step runs enqueued from one thread into idle worker",
            f"processes (`agentdur worker --concurrency {args.worker_concurrency}`), timed from "
            "the first",
            f"enqueue until all SUCCEEDED; median of {args.runs} after {args.warmup} warm-up",
            "",
            f"{'backend':<9} {'workers':>7} {'enqueue s':>10} {'total s':>8} {'runs/s':>7}  totals",
        ]
    for t in throughput:
        lines.append(
            f"{t.backend:<9} {t.workers:>7} {t.enqueue_s:>10.2f} {t.total_s:>8.2f} "
            f"{t.runs_per_s:>7.0f}  {[round(x, 2) for x in t.totals_s]}"
        )
    if latency:
        lines += [
            *([""] if lines else []),
            "pick-up latency: enqueue (created_at) -> started_at of one run enqueued into an",
            f"idle worker ({args.latency_samples} samples; PostgreSQL: LISTEN/NOTIFY, SQLite:"
            " 50 ms poll)",
            f"{'backend':<9} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}",
        ]
        for r in latency:
            lines.append(
                f"{r['backend']:<9} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['max_ms']:>8.1f}"
            )
    if recovery:
        lines += [
            *([""] if lines else []),
            f"recovery: rt.recover() over {args.recover_count} RUNNING runs of a dead executor "
            "(leases expired), one-step workflow;",
            "claimed = recover() returned (every run claimed and launched); "
            "finished = every run SUCCEEDED",
            f"{'backend':<9} {'runs':>6} {'claimed s':>10} {'finished s':>11} {'runs/s':>7}",
        ]
        for r in recovery:
            lines.append(
                f"{r['backend']:<9} {r['runs']:>6} {r['claimed_s']:>10.2f} "
                f"{r['finished_s']:>11.2f} {r['runs_per_s']:>7.0f}"
            )
    return {
        "throughput": [rounded(asdict(t)) for t in throughput],
        "latency": rounded(latency),
        "recovery": rounded(recovery),
        "results": [rounded(asdict(t)) for t in throughput] + rounded(latency + recovery),
        "text": "\n".join(lines),
    }


def main(argv: list[str] | None = None) -> int:
    import bench_agent  # the agent and replay benchmarks, registered here
    import bench_concurrency  # the concurrency benchmark
    import bench_storage  # the storage benchmark (issue 13)
    import bench_ui  # the web UI benchmark

    bench_agent.register(sys.modules[__name__])
    bench_concurrency.register(sys.modules[__name__])
    bench_storage.register(sys.modules[__name__])
    bench_ui.register(sys.modules[__name__])
    parser = argparse.ArgumentParser(
        prog="python tools/bench.py", description="agentdur benchmarks"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--runs", type=int, default=7, help="timed runs (default 7)")
    common.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    common.add_argument("--json", action="store_true", help="print machine-readable results")
    common.add_argument(
        "--postgres-url",
        help="PostgreSQL to measure (default: AGENTDUR_BENCH_POSTGRES_URL, else "
        f"{DEFAULT_POSTGRES_URL}); its schemas agentdur and agentdur_bench are dropped",
    )
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (_, arguments, help_text) in BENCHMARKS.items():
        arguments(sub.add_parser(name, parents=[common], help=help_text, description=help_text))
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")

    fn = BENCHMARKS[args.benchmark][0]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report = fn(args)
    if args.json:
        report.pop("text", None)
        payload = {"benchmark": args.benchmark, "date": started, "machine": machine(), **report}
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report["text"])
        m = machine()
        print(
            f"\nmachine: {m['cpus']} CPUs {m['cpu']}, {m['memory']}, {m['os']}, "
            f"Python {m['python']}, SQLite {m['sqlite']}, agentdur {m['agentdur']}; {started}"
        )
    return 1 if report.get("skipped") or report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
