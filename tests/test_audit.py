"""The audit: `Audit.tool_calls` / `Audit.usage`, the README's SQL, and the fork example.

A small history is recorded with tests/apps/audit_app.py's agent on each backend: two
refunds, a declined refund, a failed lookup, a fork that inherits a refund, a dry-run
fork, a refund ten days old and a plain workflow. Every query is checked against the
recorded steps or against what a user expects to find.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import agentdur
from agentdur.audit import Audit, ToolCallRecord, parse_since
from agentdur.cli_format import TOOL_CALL_COLUMNS, tool_calls_csv
from tests.apps import audit_app

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def run(rt: agentdur.Runtime, run_id: str, prompt: str) -> str:
    return str(rt.run_agent(audit_app.agent, prompt, run_id=run_id).output)


@pytest.fixture
def history(rt: agentdur.Runtime, database_url: str) -> agentdur.Runtime:
    ten_days_ago = lambda: datetime.now(timezone.utc) - timedelta(days=10)  # noqa: E731
    with agentdur.Runtime(database_url, executor_id="old", clock=ten_days_ago) as old:
        run(old, "r-old", "Please refund order A1.")
    assert run(rt, "r-a1", "Please refund order A1.").startswith("Refunded A1")
    assert run(rt, "r-b2", "Please refund order B2.").startswith("Refunded B2")
    assert run(rt, "r-z9", "Please refund order Z9.").startswith("The refund of Z9 failed")
    assert run(rt, "r-q7", "Please refund order Q7.") == "I could not find order Q7."
    rt.fork("r-a1", 4, new_run_id="r-a1-fork").result()
    rt.fork("r-a1", 2, new_run_id="r-a1-dry", dry_run=True, model="scripted-v2").result()
    assert rt.run(audit_app.greet, "ada", run_id="r-greet") == "HELLO ADA"
    return rt


def expected_calls(rt: agentdur.Runtime, run_id: str) -> list[ToolCallRecord]:
    """The audit records a run's tool steps must give, built from the steps themselves."""
    run = rt.get_run(run_id)
    return [
        ToolCallRecord(
            run_id=run_id,
            agent=run.workflow.removeprefix("agent:")
            if run.workflow.startswith("agent:")
            else None,
            step_index=s.step_index,
            tool=s.name,
            arguments=s.input.get("arguments"),
            result=s.output,
            error=s.error,
            effect=s.input.get("effect"),
            idempotency_key=s.idempotency_key,
            status=s.status,
            attempt=s.attempts,
            started_at=s.started_at,
            duration=s.duration,
            inherited=s.inherited_from is not None,
            dry_run=s.dry_run,
            deduplicated=s.deduplicated,
            inherited_from=s.inherited_from,
        )
        for s in rt.steps(run_id)
        if s.kind == "tool"
    ]


RUNS = ["r-old", "r-a1", "r-b2", "r-z9", "r-q7", "r-a1-fork", "r-a1-dry"]


def test_every_tool_call_of_every_run_is_listed_forks_included(
    history: agentdur.Runtime,
) -> None:
    calls = history.audit.tool_calls()
    assert sorted(calls, key=lambda c: (c.run_id, c.step_index)) == sorted(
        (call for run_id in RUNS for call in expected_calls(history, run_id)),
        key=lambda c: (c.run_id, c.step_index),
    )
    assert [c.started_at for c in calls] == sorted(c.started_at for c in calls)
    by_run: dict[str, list[tuple[str, bool, bool]]] = {}
    for c in calls:
        by_run.setdefault(c.run_id, []).append((c.tool, c.inherited, c.dry_run))
    assert by_run["r-a1"] == [("lookup_order", False, False), ("refund_order", False, False)]
    assert by_run["r-a1-fork"] == [("lookup_order", True, False), ("refund_order", True, False)]
    assert by_run["r-a1-dry"] == [("lookup_order", True, False), ("refund_order", False, True)]
    assert by_run["r-q7"] == [("lookup_order", False, False)]
    assert "r-greet" not in by_run


def test_a_refund_record_says_what_happened(history: agentdur.Runtime) -> None:
    (refund,) = history.audit.tool_calls("refund_order", run_id="r-a1")
    assert refund.agent == "audit-support"
    assert refund.step_index == 3
    assert refund.arguments == {"order_id": "A1", "amount": 150.0}
    assert refund.result == {"refund_id": "re_A1", "amount": 150.0}
    assert (refund.error, refund.effect, refund.status, refund.attempt) == (
        None,
        "side_effect",
        "SUCCEEDED",
        1,
    )
    assert refund.idempotency_key
    assert refund.duration is not None and refund.duration >= 0
    (inherited,) = history.audit.tool_calls("refund_order", run_id="r-a1-fork")
    assert (inherited.inherited, inherited.inherited_from) == (True, "r-a1")
    assert inherited.started_at == refund.started_at
    (declined,) = history.audit.tool_calls("refund_order", run_id="r-z9")
    assert declined.status == "ERROR"
    assert (declined.error["type"], declined.error["message"]) == ("RuntimeError", "card declined")


def _keys(calls: list[ToolCallRecord]) -> list[tuple[str, str]]:
    return sorted((c.run_id, c.tool) for c in calls)


def test_filters_combine(history: agentdur.Runtime) -> None:
    audit = Audit(history)
    refunds = audit.tool_calls("refund_order")
    assert _keys(refunds) == sorted(
        (r, "refund_order") for r in ("r-old", "r-a1", "r-b2", "r-z9", "r-a1-fork", "r-a1-dry")
    )
    assert _keys(audit.tool_calls(status="error")) == [
        ("r-q7", "lookup_order"),
        ("r-z9", "refund_order"),
    ]
    assert len(audit.tool_calls(status="ok")) == len(audit.tool_calls()) - 2
    assert {c.tool for c in audit.tool_calls(effect="read_only")} == {"lookup_order"}
    assert audit.tool_calls(agent="audit-support") == audit.tool_calls()
    assert audit.tool_calls(agent="agent:audit-support") == audit.tool_calls()
    assert audit.tool_calls(agent="someone-else") == []
    recent = audit.tool_calls("refund_order", since="2d", status="ok")
    assert _keys(recent) == sorted(
        (r, "refund_order") for r in ("r-a1", "r-b2", "r-a1-fork", "r-a1-dry")
    )
    assert "r-old" in {c.run_id for c in audit.tool_calls(since=timedelta(days=11))}
    assert audit.tool_calls(since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    assert audit.tool_calls(run_id="r-b2", effect="side_effect")[0].arguments == {
        "order_id": "B2",
        "amount": 40.0,
    }


def test_bad_filters_are_usage_errors(history: agentdur.Runtime) -> None:
    audit = Audit(history)
    with pytest.raises(agentdur.UsageError, match="since 'yesterday' is not a time: use 30m"):
        audit.tool_calls(since="yesterday")
    with pytest.raises(agentdur.UsageError, match="status must be ok or error"):
        audit.tool_calls(status="fine")
    with pytest.raises(agentdur.UsageError, match="effect must be one of read_only"):
        audit.tool_calls(effect="risky")
    with pytest.raises(agentdur.UsageError, match="group_by must be run, agent or model"):
        audit.usage(group_by="day")  # type: ignore[arg-type]


def test_since_accepts_relative_and_iso_times() -> None:
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("1w", NOW) == NOW - timedelta(weeks=1)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T08:30", NOW) == datetime(2026, 11, 1, 8, 30, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T08:30:00+02:00", NOW) == datetime(
        2026, 11, 1, 6, 30, tzinfo=timezone.utc
    )
    assert parse_since(None, NOW) is None


def test_usage_counts_the_tokens_each_run_spent(history: agentdur.Runtime) -> None:
    audit = Audit(history)
    per_run = {u.group: (u.calls, u.input_tokens, u.output_tokens) for u in audit.usage()}
    assert per_run == {
        "r-old": (3, 300, 30),
        "r-a1": (3, 300, 30),
        "r-b2": (3, 300, 30),
        "r-z9": (3, 300, 30),
        "r-q7": (2, 200, 20),
        "r-a1-fork": (1, 100, 10),  # steps 0..3 were inherited: only the last call is new
        "r-a1-dry": (2, 200, 20),
    }
    (agent,) = audit.usage(group_by="agent")
    assert (agent.group, agent.calls, agent.total_tokens) == ("audit-support", 17, 1870)
    models = {u.group: u.calls for u in audit.usage(group_by="model")}
    assert models == {"scripted": 15, "scripted-v2": 2}
    assert [u.group for u in audit.usage(run_id="r-b2")] == ["r-b2"]
    assert {u.group for u in audit.usage(since="2d")} == set(per_run) - {"r-old"}
    assert audit.usage(agent="nobody") == []


def test_the_csv_has_one_row_per_call(history: agentdur.Runtime) -> None:
    calls = history.audit.tool_calls(run_id="r-a1")
    rows = list(csv.DictReader(io.StringIO(tool_calls_csv(calls))))
    assert [r["tool"] for r in rows] == ["lookup_order", "refund_order"]
    assert list(rows[0]) == list(TOOL_CALL_COLUMNS)  # the tool_calls view's columns
    assert rows[1]["attempts"] == "1" and float(rows[1]["duration_ms"]) >= 0
    assert json.loads(rows[1]["arguments"]) == {"order_id": "A1", "amount": 150.0}
    assert (rows[1]["inherited"], rows[1]["dry_run"], rows[1]["error"]) == ("false", "false", "")


# -- the README's SQL, verbatim --------------------------------------------------------


def readme_queries() -> dict[str, dict[str, str]]:
    """{dialect: {title comment: SQL}} from the README's "Audit with plain SQL" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Audit with plain SQL", 1)[1].split("\n## ", 1)[0]
    found: dict[str, dict[str, str]] = {}
    for heading, body in re.findall(
        r"### (SQLite|PostgreSQL)[^\n]*\n(.*?)(?=\n### |\Z)", section, re.S
    ):
        dialect = "sqlite" if heading == "SQLite" else "postgres"
        for sql in re.findall(r"```sql\n(.*?)```", body, re.S):
            title = sql.splitlines()[0].removeprefix("-- ")
            found.setdefault(dialect, {})[title] = sql
    return found


def run_sql(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    with psycopg.connect(database_url) as pg:
        return pg.execute(sql).fetchall()  # type: ignore[arg-type]


def test_the_readme_has_both_queries_for_both_backends() -> None:
    queries = readme_queries()
    assert {dialect: sorted(q) for dialect, q in queries.items()} == {
        "sqlite": ["every refund above 20.00 in the last 7 days", "runs where a tool failed"],
        "postgres": ["every refund above 20.00 in the last 7 days", "runs where a tool failed"],
    }


def test_the_readme_queries_find_what_they_promise(
    history: agentdur.Runtime, database_url: str, backend: str
) -> None:
    # The refund query reads the support demo's arguments (`amount_cents`); it is run on
    # the demo's own database in tests/test_cli_replay.py.
    queries = readme_queries()[backend]
    failed = run_sql(database_url, queries["runs where a tool failed"])
    assert [tuple(r) for r in failed] == [
        ("r-z9", "audit-support", 1, "refund_order"),
        ("r-q7", "audit-support", 1, "lookup_order"),
    ]


# -- examples/fork_and_audit.py --------------------------------------------------------


def test_the_fork_and_audit_example_runs_offline(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fork_and_audit.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    tree = out.split("== run tree ==\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(tree) == 3
    assert tree[0].split()[1:3] == ["SUCCEEDED", "agent:support-demo"]
    assert tree[1].startswith("    ") and "forked at step 2" in tree[1]
    assert tree[2].startswith("    ") and "model support-model-v2, dry run" in tree[2]
    audit = out.split("== audit ==\n", 1)[1].splitlines()
    refunds = [line for line in audit if " refund_order " in line]
    assert len(refunds) == 2
    executed = [line for line in refunds if not line.rstrip().endswith(("inherited", "dry-run"))]
    assert len(executed) == 1
    assert [line.rstrip().endswith("dry-run") for line in refunds].count(True) == 1
    assert "refunds the payments service executed: 1" in out
