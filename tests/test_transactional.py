"""Transactional tools and `@agentdur.transaction` steps, on SQLite and PostgreSQL.

The tool's (or step's) writes to the application's own table and the step's checkpoint
are one transaction: both or neither. Checked with plain SQL on the application table
from a connection of its own, and by SIGKILLing a process between the write and the
commit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.models import AssistantMessage, Message, ScriptInfo, ToolResultMessage
from agentdur.testing import Scripted
from tests.apps.effects_db import execute, is_sqlite, query
from tests.helpers import wait_for

APP = Path(__file__).parent / "apps" / "effects_app.py"
URL: list[str] = []
seen: list[dict[str, Any]] = []
"""What the tools saw while their transaction was open."""
FAILS: list[BaseException] = []
"""Exceptions the next calls raise after writing, in order."""


@pytest.fixture(autouse=True)
def app_table(database_url: str) -> Iterator[None]:
    URL[:] = [database_url]
    seen.clear()
    FAILS.clear()
    if not is_sqlite(database_url):
        execute(database_url, "DROP TABLE IF EXISTS public.app_orders")
    execute(database_url, "CREATE TABLE app_orders (order_id TEXT NOT NULL, note TEXT)")
    yield


def rows(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT order_id, note FROM app_orders ORDER BY order_id, note")


def _insert(db: Any, order_id: str, note: str) -> None:
    if isinstance(db, sqlite3.Connection):
        db.execute("INSERT INTO app_orders (order_id, note) VALUES (?, ?)", (order_id, note))
    else:
        db.execute("INSERT INTO public.app_orders VALUES (%s, %s)", (order_id, note))


def _observe(db: Any, run_id: str, step_index: int) -> None:
    """What the tool's own connection and an outside connection see before the commit."""
    own = db.execute("SELECT count(*) FROM app_orders").fetchone()[0]
    seen.append(
        {
            "connection": type(db).__module__.split(".")[0],
            "own": own,
            "outside": len(rows(URL[0])),
            "step": query(
                URL[0],
                "SELECT status FROM {p}steps WHERE run_id = ? AND step_index = ?",
                (run_id, step_index),
            ),
        }
    )


@agentdur.tool(effect="side_effect", transactional=True)
def record_order(order_id: str, ctx: agentdur.ToolContext) -> dict[str, str]:
    """Record an order in the shop's table."""
    _insert(ctx.db, order_id, f"tool step {ctx.step_index}")
    _observe(ctx.db, ctx.run_id, ctx.step_index)
    if FAILS:
        raise FAILS.pop(0)
    return {"recorded": order_id}


@agentdur.tool(effect="side_effect", transactional=True, retries=1)
def record_order_retrying(order_id: str, ctx: agentdur.ToolContext) -> dict[str, str]:
    """Record an order, retrying once."""
    _insert(ctx.db, order_id, f"attempt {ctx.attempt}")
    if FAILS:
        raise FAILS.pop(0)
    return {"recorded": order_id}


class Script:
    def __init__(self, *answers: Any) -> None:
        self.answers = answers
        self.requests: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> Any:
        self.requests.append(messages)
        return self.answers[sum(isinstance(m, AssistantMessage) for m in messages)]


def _agent(name: str, tool: agentdur.Tool) -> tuple[agentdur.Agent, Script]:
    script = Script(Scripted.tool_call(tool.name, {"order_id": "T1"}), "Recorded.")
    return agentdur.Agent(name, Scripted(script), tools=[tool]), script


# -- transactional tools -------------------------------------------------------------------


def test_tool_writes_commit_with_the_checkpoint(rt: agentdur.Runtime, database_url: str) -> None:
    agent, _ = _agent("tx-ok", record_order)
    assert rt.run_agent(agent, "record T1", run_id="tx1").output == "Recorded."
    driver = "sqlite3" if is_sqlite(database_url) else "psycopg"
    # Inside the tool: its connection sees its row, nobody else does, no step recorded yet.
    assert seen == [{"connection": driver, "own": 1, "outside": 0, "step": []}]
    assert rows(database_url) == [("T1", "tool step 1")]
    step = rt.steps("tx1")[1]
    assert (step.status, step.output) == ("SUCCEEDED", {"recorded": "T1"})


def test_a_tool_that_raises_leaves_no_row(rt: agentdur.Runtime, database_url: str) -> None:
    FAILS.append(ValueError("out of stock"))
    agent, script = _agent("tx-raise", record_order)
    assert rt.run_agent(agent, "record T1", run_id="tx2").output == "Recorded."
    assert rows(database_url) == []
    step = rt.steps("tx2")[1]
    assert (step.status, step.error["type"], step.error["message"]) == (
        "ERROR",
        "ValueError",
        "out of stock",
    )
    results = [m.content for m in script.requests[-1] if isinstance(m, ToolResultMessage)]
    assert results == ["Error: ValueError: out of stock"]


def test_a_retried_tool_keeps_only_the_last_attempts_write(
    rt: agentdur.Runtime, database_url: str
) -> None:
    FAILS.append(ConnectionError("flaky"))
    agent, _ = _agent("tx-retry", record_order_retrying)
    rt.run_agent(agent, "record T1", run_id="tx3")
    assert rows(database_url) == [("T1", "attempt 2")]
    assert rt.steps("tx3")[1].attempts == 2


def test_a_finished_transactional_step_is_not_executed_again(
    rt: agentdur.Runtime, database_url: str
) -> None:
    agent, _ = _agent("tx-again", record_order)
    rt.run_agent(agent, "record T1", run_id="tx4")
    rt.run_agent(agent, "record T1", run_id="tx4")  # the same run id: the same run
    rt.replay("tx4")
    assert rows(database_url) == [("T1", "tool step 1")]
    assert len(seen) == 1


# -- @agentdur.transaction steps ---------------------------------------------------------------


@agentdur.transaction
def add_order(db: Any, order_id: str) -> str:
    _insert(db, order_id, "sync step")
    _observe(db, "txw", 0)
    if FAILS:
        raise FAILS.pop(0)
    return order_id


@agentdur.transaction(name="add_order_async", retries=1, backoff=0.01)
async def add_order_async(db: Any, order_id: str) -> str:
    _insert(db, order_id, "async step")
    if FAILS:
        raise FAILS.pop(0)
    return order_id


@agentdur.workflow(name="tx.sync")
def sync_flow(order_id: str) -> str:
    return add_order(order_id)


@agentdur.workflow(name="tx.async")
async def async_flow(order_id: str) -> str:
    return await add_order_async(order_id)


def test_transaction_step_writes_commit_with_the_checkpoint(
    rt: agentdur.Runtime, database_url: str
) -> None:
    assert rt.run(sync_flow, "W1", run_id="txw") == "W1"
    driver = "sqlite3" if is_sqlite(database_url) else "psycopg"
    assert seen == [{"connection": driver, "own": 1, "outside": 0, "step": []}]
    assert rows(database_url) == [("W1", "sync step")]
    step = rt.steps("txw")[0]
    assert (step.kind, step.name, step.status, step.output) == (
        "transaction",
        "add_order",
        "SUCCEEDED",
        "W1",
    )
    assert step.input == {"args": ["W1"]}  # the connection is not an argument to record


def test_transaction_step_that_raises_rolls_back(rt: agentdur.Runtime, database_url: str) -> None:
    FAILS.append(KeyError("W1"))
    with pytest.raises(KeyError):
        rt.run(sync_flow, "W1", run_id="txw")
    assert rows(database_url) == []
    assert [(s.status, s.error["type"]) for s in rt.steps("txw")] == [("ERROR", "KeyError")]
    assert rt.get_run("txw").status == "FAILED"


def test_async_transaction_step_retry_keeps_one_write(
    rt: agentdur.Runtime, database_url: str
) -> None:
    FAILS.append(TimeoutError("lock"))
    assert rt.run(async_flow, "W2", run_id="txa") == "W2"
    assert rows(database_url) == [("W2", "async step")]
    assert rt.steps("txa")[0].attempts == 2


def test_transaction_step_outside_a_run_is_refused() -> None:
    with pytest.raises(agentdur.OutsideRunError):
        add_order("W3")


# -- SIGKILL between the write and the commit ----------------------------------------------


def _kill_between_write_and_commit(mode: str, url: str, workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(APP), mode, url, str(workdir), "tx-crash"],
        env={**os.environ, "BLOCK_IN": "tx", "LEASE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (workdir / "blocked").exists() or proc.poll() is not None,
            timeout=60,
            what="the write",
        )
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def _recover(url: str, workdir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(APP), "recover", url, str(workdir), "tx-crash"],
        env={**os.environ, "EXECUTOR_ID": "effects-b"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _statuses(url: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT step_index, kind, status FROM {p}steps WHERE run_id = 'tx-crash' "
        "ORDER BY step_index",
    )


@pytest.mark.slow
def test_sigkill_inside_a_transactional_tool_then_recover_writes_once(
    database_url: str, tmp_path: Path
) -> None:
    _kill_between_write_and_commit("tx-tool", database_url, tmp_path)
    assert rows(database_url) == []  # the write died with its transaction
    assert _statuses(database_url) == [(0, "llm", "SUCCEEDED")]

    outcome = _recover(database_url, tmp_path)
    assert outcome["status"] == "SUCCEEDED", outcome
    assert rows(database_url) == [("T1", "tool step 1")]
    assert _statuses(database_url) == [
        (0, "llm", "SUCCEEDED"),
        (1, "tool", "SUCCEEDED"),
        (2, "llm", "SUCCEEDED"),
    ]


@pytest.mark.slow
def test_sigkill_inside_a_transaction_step_then_recover_writes_once(
    database_url: str, tmp_path: Path
) -> None:
    _kill_between_write_and_commit("tx-step", database_url, tmp_path)
    assert rows(database_url) == []
    assert _statuses(database_url) == [(0, "step", "SUCCEEDED")]

    outcome = _recover(database_url, tmp_path)
    assert outcome == {"status": "SUCCEEDED", "output": ["before", "T1", "after"], "error": None}
    assert rows(database_url) == [("T1", "transaction step")]
    assert _statuses(database_url) == [
        (0, "step", "SUCCEEDED"),
        (1, "transaction", "SUCCEEDED"),
        (2, "step", "SUCCEEDED"),
    ]
