"""Web UI benchmark, registered into tools/bench.py.

ui  server time of the web UI's pages over a database of 100,000 runs (the runs page:
    first page, a page deep in the keyset, filtered by status and by workflow) and of the
    page of one run with 1,000 steps (timeline and steps table), on SQLite and
    PostgreSQL. The rows are inserted with bulk SQL here (no workflow executes); each
    page is requested in-process through Starlette's TestClient, so the time is the
    server's: the store reads in a worker thread, the rendering, no network. Aim: under
    300 ms each (issue 12).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psycopg
from starlette.testclient import TestClient

import agentdur
from agentdur.ui.app import create_app

AIM_MS = 300.0
BIG_RUN = "big-run"

# Bulk inserts, per dialect: N runs one second apart, 10 workflows, a few statuses; one
# run with S steps (an LLM step, then two parallel tool calls, and again), one in 20
# tool calls retried.
SQLITE_RUNS = """
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n - 1)
INSERT INTO runs (run_id, workflow, status, input, output, epoch, attempts, created_at,
    started_at, finished_at)
SELECT printf('run-%07d', i), 'agent:w' || (i % 10),
    CASE WHEN i % 17 = 0 THEN 'FAILED' WHEN i % 31 = 0 THEN 'WAITING' ELSE 'SUCCEEDED' END,
    '{"args": ["refund order 1234, the customer says it never arrived"], "kwargs": {}}',
    '{"output": "done", "usage": {"input_tokens": 812, "output_tokens": 64}}', 1, 1,
    strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || i || ' seconds') || '000',
    strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || i || ' seconds') || '000',
    strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || i || ' seconds', '+0.5 seconds') || '000'
FROM s"""
SQLITE_BIG_RUN = """
INSERT INTO runs (run_id, workflow, status, input, epoch, attempts, created_at, started_at,
    finished_at)
VALUES ('big-run', 'agent:big', 'SUCCEEDED', '{"args": ["go"], "kwargs": {}}', 1, 1,
    '2027-01-01 00:00:00.000000', '2027-01-01 00:00:00.000000', '2027-01-01 00:10:00.000000')"""
SQLITE_STEPS = """
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :steps - 1)
INSERT INTO steps (run_id, step_index, name, kind, status, input, output, attempts,
    idempotency_key, usage, started_at, finished_at)
SELECT 'big-run', i, CASE WHEN i % 3 = 0 THEN 'openai' ELSE 'lookup_order' END,
    CASE WHEN i % 3 = 0 THEN 'llm' ELSE 'tool' END, 'SUCCEEDED',
    CASE WHEN i % 3 = 0
        THEN '{"provider": "openai", "params": {}, "messages": [{"role": "tool", "step": 1}]}'
        ELSE '{"call_id": "call_1", "arguments": {"order_id": "A1"}, "effect": "read_only"}' END,
    '{"order_id": "A1", "status": "shipped", "carrier": "DHL", "eta": "2026-02-01"}',
    CASE WHEN i % 20 = 1 THEN 3 ELSE 1 END,
    CASE WHEN i % 3 = 0 THEN NULL ELSE 'big-run:' || i END,
    CASE WHEN i % 3 = 0 THEN '{"input_tokens": 800, "output_tokens": 40}' ELSE NULL END,
    strftime('%Y-%m-%d %H:%M:%f', '2027-01-01', '+' || ((i / 3) * 0.6) || ' seconds') || '000',
    strftime('%Y-%m-%d %H:%M:%f', '2027-01-01', '+' || ((i / 3) * 0.6 + 0.4) || ' seconds')
        || '000'
FROM s"""
POSTGRES_RUNS = """
INSERT INTO agentdur.runs (run_id, workflow, status, input, output, epoch, attempts,
    created_at, started_at, finished_at)
SELECT 'run-' || lpad(i::text, 7, '0'), 'agent:w' || (i %% 10),
    CASE WHEN i %% 17 = 0 THEN 'FAILED' WHEN i %% 31 = 0 THEN 'WAITING' ELSE 'SUCCEEDED' END,
    '{"args": ["refund order 1234, the customer says it never arrived"], "kwargs": {}}',
    '{"output": "done", "usage": {"input_tokens": 812, "output_tokens": 64}}', 1, 1,
    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
    timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
    timestamptz '2026-01-01 00:00:00.5+00' + i * interval '1 second'
FROM generate_series(0, %(n)s - 1) AS i"""
POSTGRES_BIG_RUN = """
INSERT INTO agentdur.runs (run_id, workflow, status, input, epoch, attempts, created_at,
    started_at, finished_at)
VALUES ('big-run', 'agent:big', 'SUCCEEDED', '{"args": ["go"], "kwargs": {}}', 1, 1,
    '2027-01-01 00:00:00+00', '2027-01-01 00:00:00+00', '2027-01-01 00:10:00+00')"""
POSTGRES_STEPS = """
INSERT INTO agentdur.steps (run_id, step_index, name, kind, status, input, output, attempts,
    idempotency_key, usage, started_at, finished_at)
SELECT 'big-run', i, CASE WHEN i %% 3 = 0 THEN 'openai' ELSE 'lookup_order' END,
    CASE WHEN i %% 3 = 0 THEN 'llm' ELSE 'tool' END, 'SUCCEEDED',
    CASE WHEN i %% 3 = 0
        THEN '{"provider": "openai", "params": {}, "messages": [{"role": "tool", "step": 1}]}'
        ELSE '{"call_id": "call_1", "arguments": {"order_id": "A1"}, "effect": "read_only"}'
    END::jsonb,
    '{"order_id": "A1", "status": "shipped", "carrier": "DHL", "eta": "2026-02-01"}',
    CASE WHEN i %% 20 = 1 THEN 3 ELSE 1 END,
    CASE WHEN i %% 3 = 0 THEN NULL ELSE 'big-run:' || i END,
    CASE WHEN i %% 3 = 0 THEN '{"input_tokens": 800, "output_tokens": 40}'::jsonb END,
    timestamptz '2027-01-01 00:00:00+00' + (i / 3) * interval '0.6 second',
    timestamptz '2027-01-01 00:00:00.4+00' + (i / 3) * interval '0.6 second'
FROM generate_series(0, %(steps)s - 1) AS i"""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=100_000, help="runs (default 100,000)")
    parser.add_argument("--steps", type=int, default=1000, help="steps of one run (default 1,000)")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )


def _fill(bench: Any, backend: str, url: str, n: int, steps: int) -> None:
    rt = agentdur.Runtime(url)
    rt._ensure_store()  # the schema, migrated
    rt.close()
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(SQLITE_RUNS, {"n": n})
            conn.execute(SQLITE_BIG_RUN)
            conn.execute(SQLITE_STEPS, {"steps": steps})
        conn.execute("ANALYZE")
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(POSTGRES_RUNS, {"n": n})
        pg.execute(POSTGRES_BIG_RUN)
        pg.execute(POSTGRES_STEPS, {"steps": steps})
        pg.execute("VACUUM ANALYZE agentdur.runs")
        pg.execute("VACUUM ANALYZE agentdur.steps")


def _pages(client: TestClient) -> dict[str, str]:
    deep = client.get("/api/runs?limit=50&before=2026-01-01T13:53:20.000000Z|run-0050000")
    assert deep.status_code == 200, deep.text
    return {
        "runs: first page": "/",
        "runs: page at run 50,000": "/?before=2026-01-01T13:53:20.000000Z%7Crun-0050000",
        "runs: status FAILED": "/?status=FAILED",
        "runs: workflow agent:w3": "/?workflow=agent%3Aw3",
        "runs: since 2h before the newest": "/?since=2026-01-02T02:00:00",
        "run: 1,000 steps": f"/runs/{BIG_RUN}",
        "api: 1,000 steps": f"/api/runs/{BIG_RUN}/steps",
    }


def measure(bench: Any, args: argparse.Namespace, backend: str) -> list[dict[str, Any]]:
    results = []
    with bench.temp_sqlite_path() as path:
        if backend == "sqlite":
            url = f"sqlite:///{path}"
        else:
            url = bench.postgres_url(args)
            bench.drop_postgres_schema(url, "agentdur")
        started = time.perf_counter()
        _fill(bench, backend, url, args.n, args.steps)
        fill_s = time.perf_counter() - started
        with TestClient(create_app(url), base_url="http://127.0.0.1:7800") as client:
            for name, page in _pages(client).items():
                samples = []
                for i in range(args.warmup + args.runs):
                    t0 = time.perf_counter()
                    response = client.get(page)
                    elapsed = time.perf_counter() - t0
                    if response.status_code != 200:
                        raise SystemExit(f"{backend} {page}: HTTP {response.status_code}")
                    if i >= args.warmup:
                        samples.append(elapsed * 1000)
                results.append(
                    {
                        "backend": backend,
                        "page": name,
                        "median_ms": statistics.median(samples),
                        "max_ms": max(samples),
                        "bytes": len(response.content),
                        "fill_s": fill_s,
                    }
                )
    return results


def register(bench: Any) -> None:
    """Add the benchmark to tools/bench.py's registry."""

    @bench.benchmark(
        "ui",
        help="web UI server time: runs page over 100,000 runs, run page of 1,000 steps",
        arguments=_arguments,
    )
    def bench_ui(args: argparse.Namespace) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        for backend in args.backends:
            try:
                results += measure(bench, args, backend)
            except (agentdur.StoreUnavailable, psycopg.OperationalError) as exc:
                if backend != "postgres":
                    raise
                skipped[backend] = f"PostgreSQL unavailable: {' '.join(str(exc).split())}"
        lines = [
            f"ui: server time of each page (in-process TestClient), {args.n:,} runs and one "
            f"run of {args.steps:,} steps;",
            f"median of {args.runs} requests after {args.warmup} warm-up; aim < {AIM_MS:.0f} ms.",
            "",
            f"{'backend':<9} {'page':<34} {'median ms':>10} {'max ms':>8} {'KiB':>7}  aim",
        ]
        for r in results:
            ok = "ok" if r["median_ms"] < AIM_MS else "OVER"
            lines.append(
                f"{r['backend']:<9} {r['page']:<34} {r['median_ms']:>10.1f} {r['max_ms']:>8.1f} "
                f"{r['bytes'] / 1024:>7.0f}  {ok}"
            )
        for backend, why in skipped.items():
            lines.append(f"{backend}: skipped ({why})")
        return {"results": bench.rounded(results), "skipped": skipped, "text": "\n".join(lines)}
