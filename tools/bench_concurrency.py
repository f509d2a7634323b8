"""Concurrency benchmark, registered into tools/bench.py.

concurrency  N runs of S steps that each await a sleep (default 20 x 50 ms), all started at
             once on one Runtime, for N = 100 and 1,000 on SQLite and PostgreSQL. Reports the
             wall time against the ideal (S x the sleep: the runs overlap completely),
             checkpointed steps/s, and the lag of the runtime's event loop (a 5 ms ticker on
             the loop that executes the runs): what 1,000 concurrent agents waiting on I/O
             cost in throughput and responsiveness. Every run is checked afterwards in the
             store (SUCCEEDED, S SUCCEEDED steps); a lost step fails the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

import agentdur

AIM_STEPS_PER_S = 8000.0
"""Checkpointed steps/s the project aims for at N = 1,000, on each backend."""
AIM_LAG_P99_MS = 50.0
"""Loop lag p99 the project aims for at N = 1,000."""
TICK_S = 0.005
"""Period of the loop-lag ticker."""
WAIT_LIMIT_S = 300.0
"""How long past 10x the ideal to wait for the runs before reporting the rest as lost."""


@agentdur.step(name="bench.conc_step")
async def conc_step(i: int, k: int, step_ms: float) -> int:
    """Stands for an I/O-bound step (an LLM or HTTP call): it only waits."""
    await asyncio.sleep(step_ms / 1000)
    return k


@agentdur.workflow(name="bench.concurrency")
async def conc_run(i: int, steps: int, step_ms: float) -> int:
    total = 0
    for k in range(steps):
        total += await conc_step(i, k, step_ms)
    return total


def _runtime_loop(rt: agentdur.Runtime) -> asyncio.AbstractEventLoop:
    """The asyncio loop that executes the runtime's runs (bench-only peek at an internal)."""
    return rt._loop_thread().loop


class LagTicker:
    """Measures how late a 5 ms sleep wakes up on a loop: lag = elapsed - 5 ms.

    A loop that blocks (synchronous I/O, long callbacks) delays every coroutine on it by
    as much; this ticker feels the same delay.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lags_s: list[float] = []
        self._stop = threading.Event()
        self._future: Any = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags_s.append(max(0.0, time.perf_counter() - before - TICK_S))

    def start(self) -> None:
        self._future = asyncio.run_coroutine_threadsafe(self._tick(), self.loop)

    def stop(self) -> list[float]:
        self._stop.set()
        if self._future is not None:
            self._future.result(timeout=30)
        return self.lags_s


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values): p99 of 200 samples is the 2nd largest."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(len * p / 100)
    return ordered[int(rank) - 1]


@dataclass
class Batch:
    """One timed batch: N runs started at once on a fresh database, all awaited."""

    start_s: float
    """First start to the last start returning: the caller's cost of starting N runs."""
    wall_s: float
    """First start to the last result: what the caller waits for all N runs."""
    lags_ms: list[float]
    problems: list[str]
    """What the check of the store found wrong (empty: every run and step recorded)."""


@dataclass
class ConcurrencyResult:
    """Medians over the timed batches of one backend and N."""

    backend: str
    n: int
    """Concurrent runs in each batch."""
    steps: int
    step_ms: float
    batches: int
    start_s: float
    wall_s: float
    ideal_s: float
    """steps x step_ms: every run overlapping completely, no overhead."""
    steps_per_s: float
    """n x steps / wall_s: checkpointed steps per second."""
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    """Median over the batches of each batch's p50, p99 and max."""
    lag_samples: int
    aim_steps_per_s: float = AIM_STEPS_PER_S
    aim_lag_p99_ms: float = AIM_LAG_P99_MS
    batch_wall_s: list[float] = field(default_factory=list)
    batch_lag_p99_ms: list[float] = field(default_factory=list)
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)
    """The first problems the store checks found (all batches)."""


@contextmanager
def fresh_runtime(bench: Any, args: argparse.Namespace, backend: str) -> Iterator[agentdur.Runtime]:
    """An open Runtime on a new database: a temp SQLite file, or a recreated schema."""
    if backend == "sqlite":
        with bench.temp_sqlite_path() as path:
            rt = agentdur.Runtime(f"sqlite:///{path}", executor_id=_executor_id())
            try:
                yield rt.open()
            finally:
                rt.close()
        return
    url = bench.postgres_url(args)
    bench.drop_postgres_schema(url, "agentdur")  # migrations apply fresh when rt opens
    try:
        rt = agentdur.Runtime(url, executor_id=_executor_id())
        try:
            yield rt.open()
        finally:
            rt.close()
    finally:
        bench.drop_postgres_schema(url, "agentdur")


def _executor_id() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def start_and_wait(
    rt: agentdur.Runtime, n: int, steps: int, step_ms: float
) -> tuple[list[str], list[Any], float, float]:
    """Start n runs at once, then wait for all; run ids, outputs, start and wall seconds.

    The runs are started as an agent server would start them: concurrently, with
    `await rt.astart(...)` from the caller's own event loop (here the main thread's),
    so their first records share commits. The start phase is reported on its own to
    tell the caller's cost apart from the runtime's.
    """

    async def main() -> tuple[list[str], list[Any], float, float]:
        began = time.perf_counter()
        handles = await asyncio.gather(*(rt.astart(conc_run, i, steps, step_ms) for i in range(n)))
        started = time.perf_counter()
        limit = WAIT_LIMIT_S + 10 * steps * step_ms / 1000
        outputs = await asyncio.gather(
            *(h.aresult(timeout=limit) for h in handles), return_exceptions=True
        )
        finished = time.perf_counter()
        return [h.run_id for h in handles], list(outputs), started - began, finished - began

    return asyncio.run(main())


def check_store(
    rt: agentdur.Runtime, run_ids: list[str], outputs: list[Any], steps: int, *, others: int
) -> list[str]:
    """Every run SUCCEEDED with the right output and exactly `steps` SUCCEEDED steps.

    `others` is how many more runs of the workflow the store holds (the warm-up run).
    """
    problems: list[str] = []
    expected = steps * (steps - 1) // 2
    for run_id, output in zip(run_ids, outputs, strict=True):
        if isinstance(output, BaseException):
            problems.append(f"run {run_id} raised {type(output).__name__}: {output}")
        elif output != expected:
            problems.append(f"run {run_id} returned {output!r}, expected {expected}")
        status = rt.get_run(run_id).status
        if status != "SUCCEEDED":
            problems.append(f"run {run_id} is {status}")
        recorded = rt.steps(run_id)
        done = [s for s in recorded if s.status == "SUCCEEDED" and s.name == conc_step.name]
        if len(recorded) != steps or len(done) != steps:
            problems.append(
                f"run {run_id} has {len(recorded)} steps recorded, {len(done)} SUCCEEDED; "
                f"expected {steps}"
            )
    limit = len(run_ids) + others + 100
    counted = len(rt.list_runs(workflow=conc_run.name, limit=limit))
    if counted != len(run_ids) + others:
        problems.append(
            f"{counted} runs of {conc_run.name} in the store, expected {len(run_ids) + others}"
        )
    return problems


def run_batch(bench: Any, args: argparse.Namespace, backend: str, n: int) -> Batch:
    """One batch of n runs on a fresh database of the backend, timed and checked."""
    with fresh_runtime(bench, args, backend) as rt:
        rt.run(conc_run, -1, 1, 0.0)  # untimed: loop thread, pool and caches warm
        ticker = LagTicker(_runtime_loop(rt))
        ticker.start()
        try:
            run_ids, outputs, start_s, wall_s = start_and_wait(rt, n, args.steps, args.step_ms)
        finally:
            lags = ticker.stop()
        problems = check_store(rt, run_ids, outputs, args.steps, others=1)
    return Batch(start_s, wall_s, [lag * 1e3 for lag in lags], problems)


def measure(bench: Any, args: argparse.Namespace, backend: str, n: int) -> ConcurrencyResult:
    """`--warmup` untimed then `--runs` timed batches; medians of each figure."""
    for _ in range(args.warmup):
        run_batch(bench, args, backend, n)
    batches = [run_batch(bench, args, backend, n) for _ in range(args.runs)]
    wall_s = median([b.wall_s for b in batches])
    problems = [p for b in batches for p in b.problems]
    return ConcurrencyResult(
        backend=backend,
        n=n,
        steps=args.steps,
        step_ms=args.step_ms,
        batches=len(batches),
        start_s=median([b.start_s for b in batches]),
        wall_s=wall_s,
        ideal_s=args.steps * args.step_ms / 1000,
        steps_per_s=n * args.steps / wall_s,
        lag_p50_ms=median([percentile(b.lags_ms, 50) for b in batches]),
        lag_p99_ms=median([percentile(b.lags_ms, 99) for b in batches]),
        lag_max_ms=median([max(b.lags_ms, default=0.0) for b in batches]),
        lag_samples=sum(len(b.lags_ms) for b in batches),
        batch_wall_s=[b.wall_s for b in batches],
        batch_lag_p99_ms=[percentile(b.lags_ms, 99) for b in batches],
        problem_count=len(problems),
        problems=problems[:20],
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, nargs="+", default=[100, 1000], help="concurrent runs (default 100 1000)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("sqlite", "postgres"),
        default=["sqlite", "postgres"],
        help="stores to measure (default both)",
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per run (default 20)")
    parser.add_argument(
        "--step-ms", type=float, default=50.0, help="each step's sleep in ms (default 50)"
    )
    # A batch of 1,000 runs takes seconds and gets a fresh database: 3 batches, no warm-up
    # batch (each batch runs one untimed warm-up run first).
    parser.set_defaults(runs=3, warmup=0)


def _table(results: list[ConcurrencyResult], skipped: dict[str, str]) -> list[str]:
    lines = [
        f"{'backend':<9} {'N':>5} {'start s':>8} {'wall s':>7} {'ideal s':>8} "
        f"{'steps/s':>8} {'aim':>6} {'lag p50':>8} {'p99':>6} {'max ms':>7} {'aim p99':>8}  store",
    ]
    for r in results:
        lines.append(
            f"{r.backend:<9} {r.n:>5} {r.start_s:>8.2f} {r.wall_s:>7.2f} {r.ideal_s:>8.2f} "
            f"{r.steps_per_s:>8.0f} {r.aim_steps_per_s:>6.0f} {r.lag_p50_ms:>8.1f} "
            f"{r.lag_p99_ms:>6.1f} {r.lag_max_ms:>7.1f} {r.aim_lag_p99_ms:>8.0f}  "
            f"{'FAILED' if r.problem_count else 'ok'}"
        )
    for backend, reason in skipped.items():
        lines.append(f"{backend:<9} skipped: {reason}")
    return lines


def register(bench: Any) -> None:
    """Add the benchmark to tools/bench.py's registry."""

    @bench.benchmark(
        "concurrency",
        help="N concurrent runs of sleeping steps: steps/s and event-loop lag",
        arguments=_arguments,
    )
    def bench_concurrency(args: argparse.Namespace) -> dict[str, Any]:
        if args.steps < 1 or args.step_ms < 0 or min(args.n) < 1:
            raise SystemExit("--steps and --n must be at least 1, --step-ms at least 0")
        results: list[ConcurrencyResult] = []
        skipped: dict[str, str] = {}
        for backend in args.backends:
            try:
                for n in args.n:
                    results.append(measure(bench, args, backend, n))
            except (agentdur.StoreUnavailable, psycopg.OperationalError) as exc:
                if backend != "postgres":
                    raise
                detail = " ".join(str(exc).split())
                skipped[backend] = f"PostgreSQL unavailable: {type(exc).__name__}: {detail}"
        failed = {f"{r.backend} N={r.n}": r.problems for r in results if r.problem_count}
        lines = [
            f"concurrency: N runs of {args.steps} steps awaiting {args.step_ms:g} ms each, all "
            "started at once (await rt.astart",
            "back to back) on one Runtime, a fresh database per batch; median of "
            f"{args.runs} batches after {args.warmup} warm-up.",
            "start = first start to last start returned; wall = first start to last result;",
            "steps/s = N x steps / wall; lag = lateness of a 5 ms ticker on the runtime's loop.",
            f"aims at N = 1,000: {AIM_STEPS_PER_S:,.0f} steps/s, loop lag p99 "
            f"<= {AIM_LAG_P99_MS:.0f} ms.",
            "",
            *_table(results, skipped),
        ]
        for r in results:
            walls = [round(w, 2) for w in r.batch_wall_s]
            p99s = [round(x, 1) for x in r.batch_lag_p99_ms]
            lines.append(f"  {r.backend} N={r.n}: wall s per batch {walls}, lag p99 ms {p99s}")
        for where, problems in failed.items():
            lines.append(f"\nFAILED {where}: problems in the store, first ones:")
            lines += [f"  {p}" for p in problems[:10]]
        return {
            "results": [bench.rounded(asdict(r)) for r in results],
            "skipped": skipped,
            "failed": failed,
            "text": "\n".join(lines),
        }
