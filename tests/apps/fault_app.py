"""Workflows for the database-fault tests (tests/test_faults.py), in-process and as a script.

Every step body appends one line `run_id:k pid` to a log file opened with O_APPEND, before
doing anything else: the log, not the store, is what the tests count executions with.
`log_to(path)` points this process at the log (the script takes it on its command line).

Workflows:
  fault.steps     async, `n` plain steps; step k logs, then sleeps `seconds` (asyncio)
  fault.sync_tx   sync, `n` `@agentdur.transaction` steps; each logs, inserts the row
                  (run_id, k) into the application table `fault_rows` through `db`, then
                  sleeps `seconds` inside its transaction
  fault.async_tx  async, one async `@agentdur.transaction` step doing the same

Script (a process with the DEFAULT Runtime: no executor id, recover=True):

    python fault_app.py batch DATABASE_URL LOG PREFIX N STEPS SECONDS

starts runs PREFIX-00 .. PREFIX-{N-1} of `fault.steps` (STEPS steps of SECONDS each),
printing `ready` once the Runtime is open and `started` once every run is started, waits
for them and prints one JSON line {run_id: "ok" | error}. Run again with the same
arguments it resumes what an earlier, killed process left (the same run ids start
nothing new).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sqlite3
import sys
import time
from typing import Any

import agentdur

_LOG = [os.devnull]
TABLE_DDL = "CREATE TABLE fault_rows (run_id TEXT NOT NULL, k INTEGER NOT NULL)"


def log_to(path: str | os.PathLike[str]) -> None:
    """Where this process's step bodies record that they ran."""
    _LOG[0] = os.fspath(path)


def mark(run_id: str, k: int) -> None:
    """Append `run_id:k pid` with one write(2) on an O_APPEND descriptor (atomic)."""
    fd = os.open(_LOG[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{run_id}:{k} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _insert_sql(db: Any) -> str:
    if isinstance(db, sqlite3.Connection):
        return "INSERT INTO fault_rows (run_id, k) VALUES (?, ?)"
    return "INSERT INTO public.fault_rows (run_id, k) VALUES (%s, %s)"


# -- plain steps -------------------------------------------------------------------------


@agentdur.step(name="fault.body")
async def body(run_id: str, k: int, seconds: float) -> int:
    mark(run_id, k)
    await asyncio.sleep(seconds)
    return k


@agentdur.workflow(name="fault.steps")
async def steps(run_id: str, n: int, seconds: float) -> list[int]:
    return [await body(run_id, k, seconds) for k in range(n)]


# -- transactional steps -----------------------------------------------------------------


@agentdur.transaction(name="fault.add_row")
def add_row(db: Any, run_id: str, k: int, seconds: float) -> int:
    mark(run_id, k)
    db.execute(_insert_sql(db), (run_id, k))
    time.sleep(seconds)
    return k


@agentdur.workflow(name="fault.sync_tx")
def sync_tx(run_id: str, n: int, seconds: float) -> list[int]:
    return [add_row(run_id, k, seconds) for k in range(n)]


@agentdur.transaction(name="fault.add_row_async")
async def add_row_async(db: Any, run_id: str, k: int, seconds: float) -> int:
    mark(run_id, k)
    done = db.execute(_insert_sql(db), (run_id, k))
    if inspect.isawaitable(done):  # an async connection (psycopg AsyncConnection)
        await done
    await asyncio.sleep(seconds)
    return k


@agentdur.workflow(name="fault.async_tx")
async def async_tx(run_id: str, seconds: float) -> int:
    return await add_row_async(run_id, 0, seconds)


# -- the script --------------------------------------------------------------------------


def run_id_of(prefix: str, i: int) -> str:
    return f"{prefix}-{i:02d}"


def batch(url: str, prefix: str, n: int, n_steps: int, seconds: float) -> dict[str, str]:
    outcome: dict[str, str] = {}
    with agentdur.Runtime(url, recover=True) as rt:  # the defaults: no executor id
        print("ready", flush=True)
        handles = [
            rt.start(steps, run_id_of(prefix, i), n_steps, seconds, run_id=run_id_of(prefix, i))
            for i in range(n)
        ]
        print("started", flush=True)
        deadline = time.monotonic() + 60
        for handle in handles:
            try:
                handle.result(timeout=max(0.1, deadline - time.monotonic()))
                outcome[handle.run_id] = "ok"
            except Exception as exc:
                outcome[handle.run_id] = f"{type(exc).__name__}: {exc}"
    return outcome


def main(argv: list[str]) -> int:
    mode, url, log, prefix, n, n_steps, seconds = argv[1:8]
    if mode != "batch":
        raise SystemExit(f"unknown mode {mode!r}")
    log_to(log)
    print(json.dumps(batch(url, prefix, int(n), int(n_steps), float(seconds))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
