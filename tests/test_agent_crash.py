"""Agents killed with SIGKILL in real processes, then recovered, on both backends.

The agent app talks to the real `openai` SDK, whose HTTP is answered by a respx router
(tests/apps/agent_app.py); the router's side effect appends each request's turn to
requests.log, the call log shared across processes, and each tool appends to tools.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agentdur
from tests.apps import agent_app
from tests.helpers import wait_for

ROOT = Path(__file__).parents[1]
APP = ROOT / "tests" / "apps" / "agent_app.py"
DEMO = ROOT / "examples" / "support_agent.py"
pytestmark = pytest.mark.slow


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_agent_killed_during_third_llm_request_finishes_after_recovery(
    database_url: str, tmp_path: Path
) -> None:
    requests_log, tools_log = tmp_path / "requests.log", tmp_path / "tools.log"
    start = subprocess.Popen(
        [sys.executable, str(APP), "start", database_url, str(tmp_path)],
        env={**os.environ, "BLOCK_ON_TURN": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The third request has reached the provider, which never answers it: the
        # process is inside the LLM call of step 4, with steps 0-3 checkpointed.
        wait_for(lambda: "2" in _lines(requests_log), timeout=60, what="the third request")
        with agentdur.Runtime(database_url) as reader:
            before = reader.steps(agent_app.RUN_ID)
        start.send_signal(signal.SIGKILL)
        start.wait(timeout=30)
    finally:
        if start.poll() is None:
            start.kill()
    assert start.returncode == -signal.SIGKILL, start.stderr.read() if start.stderr else ""
    assert [(s.kind, s.name) for s in before] == [
        ("llm", "gpt-4o-mini"),
        ("tool", "lookup_order"),
        ("llm", "gpt-4o-mini"),
        ("tool", "refund_order"),
    ]
    assert _lines(requests_log) == ["0", "1", "2"]
    assert _lines(tools_log) == ["lookup_order A17", "refund_order A17 4990"]

    recovery = subprocess.run(
        [sys.executable, str(APP), "recover", database_url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recovery.returncode == 0, recovery.stderr
    assert recovery.stdout.strip() == agent_app.FINAL_TEXT

    # The provider saw turns 0 and 1 once each; turn 2 again, as it was in flight.
    assert _lines(requests_log) == ["0", "1", "2", "2"]
    assert _lines(tools_log) == ["lookup_order A17", "refund_order A17 4990"]
    with agentdur.Runtime(database_url) as rt:
        run = rt.get_run(agent_app.RUN_ID)
        assert (run.status, run.epoch, run.attempts) == ("SUCCEEDED", 2, 2)
        assert run.output["output"] == agent_app.FINAL_TEXT
        steps = rt.steps(agent_app.RUN_ID)
        assert [(s.kind, s.name, s.status) for s in steps] == [
            ("llm", "gpt-4o-mini", "SUCCEEDED"),
            ("tool", "lookup_order", "SUCCEEDED"),
            ("llm", "gpt-4o-mini", "SUCCEEDED"),
            ("tool", "refund_order", "SUCCEEDED"),
            ("llm", "gpt-4o-mini", "SUCCEEDED"),
        ]
        assert steps[:4] == before  # the recording was replayed, not rewritten
        assert steps[4].output["raw"] == agent_app.ANSWERS[2]
        assert steps[3].output == {"refund_id": "re_A17", "amount_cents": 4990}


def test_support_demo_resumes_after_sigkill_and_refunds_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'support.db'}"
    crashed = subprocess.run(
        [sys.executable, str(DEMO), "--crash-after", "3", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "3 steps checkpointed: SIGKILL" in crashed.stdout
    assert "tool  refund_order" not in crashed.stdout
    assert not (tmp_path / "payments.json").exists()  # the payments service saw nothing yet

    resumed = subprocess.run(
        [sys.executable, str(DEMO), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "3 steps recorded by an earlier process; the run resumes now" in resumed.stdout
    assert "payments service: refunds executed: 1 (requests received: 1)" in resumed.stdout

    ledger = json.loads((tmp_path / "payments.json").read_text())
    assert ledger["requests"] == {"support-demo:3": 1}
    assert [r["order_id"] for r in ledger["refunds"].values()] == ["A1042"]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    with agentdur.Runtime(url) as rt:
        run = rt.get_run("support-demo")
        assert (run.status, run.attempts) == ("SUCCEEDED", 2)
        assert run.output["output"] in resumed.stdout.replace("\n", " ")
        steps = rt.steps("support-demo")
        assert [(s.kind, s.name) for s in steps if s.kind == "tool"] == [
            ("tool", "lookup_order"),
            ("tool", "refund_order"),
            ("tool", "send_email"),
        ]
        assert [s.status for s in steps] == ["SUCCEEDED"] * 7
