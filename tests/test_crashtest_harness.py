"""The crash-test harness (tools/crashtest.py): a reduced run per backend, and its checks.

The reduced run kills worker processes about 25 times per backend and must report no
violation. The check tests feed the harness recordings that break a rule, to show each
check does fail when it should.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "crashtest.py"
SUMMARY = re.compile(r"^(\d+) runs, (\d+) kills, (\d+) violations$")
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _crashtest(*args: str) -> tuple[int, int, int, str]:
    done = subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    assert match, f"no summary line: {done.stdout!r} {done.stderr[-3000:]}"
    runs, kills, violations = (int(g) for g in match.groups())
    assert done.returncode == (1 if violations else 0), done.stderr[-3000:]
    return runs, kills, violations, done.stderr


@pytest.mark.slow
def test_reduced_crash_run_on_sqlite() -> None:
    runs, kills, violations, details = _crashtest("--backend", "sqlite", "--runs", "80")
    assert runs == 80
    assert kills >= 15, details
    assert violations == 0, details


@pytest.mark.slow
def test_reduced_crash_run_on_postgres(postgres_url: str) -> None:
    server = os.environ.get("AGENTDUR_TEST_POSTGRES_URL", DEFAULT_SERVER)
    runs, kills, violations, details = _crashtest(
        "--backend", "postgres", "--runs", "80", "--postgres-url", server
    )
    assert runs == 80
    assert kills >= 15, details
    assert violations == 0, details


# -- the checks themselves -------------------------------------------------------------------


@pytest.fixture(scope="module")
def crashtest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crashtest_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crashtest_tool"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def harness(crashtest: ModuleType, tmp_path: Path) -> Any:
    import random

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    h = crashtest.Harness(
        url=url, workdir=tmp_path, runs=[], rng=random.Random(1), batch=2, verbose=False
    )
    h.operator.list_runs(limit=1)  # creates the schema
    yield h
    h.operator.close()


def _log(path: Path, *records: dict[str, Any]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _calls(*calls: tuple[str, int, int]) -> list[dict[str, Any]]:
    return [{"run_id": r, "turn": t, "pid": p, "event": "start"} for r, t, p in calls]


def test_llm_check_allows_a_repeat_only_after_a_kill_cut_the_call_short(harness: Any) -> None:
    harness.killed_pids = {101}
    _log(harness.workdir / "llm.log", *_calls(("r", 0, 100), ("r", 1, 101), ("r", 1, 102)))
    harness.check_llm_calls()
    assert harness.violations == []


def test_llm_check_flags_a_repeat_after_the_process_moved_on(harness: Any) -> None:
    harness.killed_pids = {101}
    _log(
        harness.workdir / "llm.log",
        *_calls(("r", 0, 101), ("r", 1, 101), ("r", 0, 102)),
    )
    harness.check_llm_calls()
    assert harness.violations == [
        "run r turn 0 reached the model again after process 101 had called it and moved on"
    ]


def test_llm_check_flags_a_repeat_by_a_process_that_was_not_killed(harness: Any) -> None:
    _log(harness.workdir / "llm.log", *_calls(("r", 0, 100), ("r", 0, 102)))
    harness.check_llm_calls()
    assert harness.violations == [
        "run r turn 0 reached the model again after process 100 had called it and was not killed"
    ]


def test_llm_check_flags_two_calls_of_one_turn_in_one_process(harness: Any) -> None:
    harness.killed_pids = {100}
    _log(harness.workdir / "llm.log", *_calls(("r", 0, 100), ("r", 0, 100)))
    harness.check_llm_calls()
    assert "run r turn 0: one process called the model twice" in harness.violations


def test_step_check_flags_a_lost_or_changed_step(harness: Any) -> None:
    harness.seen_steps = {("r", 0): ("llm", "SUCCEEDED", "x"), ("r", 1): ("tool", "ok", 1)}
    harness.db.finished_steps = lambda: {("r", 1): ("tool", "ok", 2)}
    harness.check_steps_kept()
    assert harness.violations == [
        "step ('r', 0) was recorded finished and is now gone",
        "step ('r', 1) changed: ('tool', 'ok', 1) -> ('tool', 'ok', 2)",
    ]


def test_final_check_flags_a_refund_executed_twice(harness: Any) -> None:
    line = {"key": "refund:O1", "order_id": "O1", "amount_cents": 5, "refund_id": "re_1"}
    _log(
        harness.workdir / "payments.log",
        {**line, "status": "succeeded", "run_id": "r", "step": 3, "pid": 1},
        {**line, "status": "succeeded", "refund_id": "re_2", "run_id": "r", "step": 3, "pid": 2},
    )
    harness.check_final()
    assert harness.violations[0].startswith("refund:O1 was executed 2 times")
    assert "run r step 3 executed its refund 2 times" in harness.violations
