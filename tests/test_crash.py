"""Crash tests with real processes killed by SIGKILL, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agentdur
from tests.helpers import wait_for

APP = Path(__file__).parent / "apps" / "ten_steps.py"
pytestmark = pytest.mark.slow


def _spawn(mode: str, url: str, out: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), mode, url, str(out)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_six_checkpoints(database_url: str, out: Path) -> list[agentdur.StepInfo]:
    proc = _spawn("start", database_url, out, BLOCK_AT="7")
    reader = agentdur.Runtime(database_url)
    try:
        wait_for(
            lambda: reader.list_runs() and len(reader.steps("crash-run")) == 6,
            timeout=60,
            what="six checkpointed steps",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        return reader.steps("crash-run")
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()


def test_sigkill_after_step_six_then_recover_runs_each_step_once(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "effects.txt"
    _kill_after_six_checkpoints(database_url, out)
    assert out.read_text().split() == ["1", "2", "3", "4", "5", "6"]

    recovery = subprocess.run(
        [sys.executable, str(APP), "recover", database_url, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recovery.returncode == 0, recovery.stderr
    assert recovery.stdout.strip() == "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
    assert out.read_text().split() == [str(i) for i in range(1, 11)]
    with agentdur.Runtime(database_url) as rt:
        run = rt.get_run("crash-run")
        assert (run.status, run.output, run.epoch) == ("SUCCEEDED", list(range(1, 11)), 2)
        steps = rt.steps("crash-run")
        assert [(s.step_index, s.output) for s in steps] == [(i, i + 1) for i in range(10)]


def test_recovery_with_changed_code_ends_in_nondeterminism(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "effects.txt"
    before = _kill_after_six_checkpoints(database_url, out)

    recovery = subprocess.run(
        [sys.executable, str(APP), "recover", database_url, str(out)],
        env={**os.environ, "CODE_VERSION": "v2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recovery.returncode == 3, recovery.stderr
    assert "diverged from its recording at step 3" in recovery.stdout
    assert "recorded step 'append'" in recovery.stdout
    assert "asks for step 'append_differently'" in recovery.stdout
    assert out.read_text().split() == ["1", "2", "3", "4", "5", "6"]
    with agentdur.Runtime(database_url) as rt:
        run = rt.get_run("crash-run")
        assert run.status == "FAILED"
        assert run.error["type"] == "NonDeterminismError"
        assert rt.steps("crash-run") == before
