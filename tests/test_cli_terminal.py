"""The command line at a terminal: Ctrl-C, `| head`, non-ASCII text, helpful lookups.

Real processes where the behaviour is the process's: SIGINT sent to a running demo and
to a running `agentdur worker`, a pipe its reader closes early. The rest runs `main()`
in-process.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import agentdur
from agentdur.cli import main
from agentdur.cli_format import timeline_line
from agentdur.cli_worker import worker_runtime
from agentdur.store import StepInfo
from tests.apps import queue_app
from tests.apps.queue_workers import APP as QUEUE_APP
from tests.apps.queue_workers import Workers
from tests.helpers import wait_for
from tests.test_cli_replay import APP, ROOT, cli, history  # noqa: F401 (a fixture)

EXAMPLES = ROOT / "examples"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ agentdur")
"""A log record of the worker (its events go to stderr), not a message of the command."""


def _agentdur() -> str:
    script = Path(sys.executable).parent / "agentdur"
    found = str(script) if script.exists() else shutil.which("agentdur")
    assert found, "the agentdur console script is not installed (pip install -e .)"
    return found


def demo_folder(tmp_path: Path) -> Path:
    """A folder holding a copy of the demo, as a repository root would."""
    (tmp_path / "examples").mkdir()
    for name in ("support_agent.py", "payments_service.py"):
        shutil.copy(EXAMPLES / name, tmp_path / "examples" / name)
    return tmp_path


def assert_interrupted(stderr: str, line: str) -> None:
    messages = [entry for entry in stderr.splitlines() if not LOG_LINE.match(entry)]
    assert messages == [line], stderr
    assert "Traceback" not in stderr


# -- Ctrl-C ----------------------------------------------------------------------------


def test_ctrl_c_stops_the_demo_with_130_and_one_line_and_the_run_resumes(
    tmp_path: Path,
) -> None:
    folder = demo_folder(tmp_path)
    demo = [sys.executable, "examples/support_agent.py"]
    proc = subprocess.Popen(
        demo, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the steps are printed as they are checkpointed
        seen.append(line)
        if line.strip().startswith("step 1 "):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert err == (
        "interrupted: the steps checkpointed so far stay recorded; "
        "run the demo again to resume the run\n"
    )

    again = subprocess.run(demo, cwd=folder, capture_output=True, text=True, timeout=120)
    assert (again.returncode, again.stderr) == (0, "")
    assert "steps recorded by an earlier process" in again.stdout
    assert "run support-demo: SUCCEEDED, 7 steps" in again.stdout
    assert "refunds executed: 1 (requests received: 1)" in again.stdout


def test_ctrl_c_stops_a_worker_after_its_runs_with_130_and_one_line(
    tmp_path: Path, database_url: str
) -> None:
    workers = Workers(database_url, tmp_path)
    try:
        proc = workers.start("--queue", "work", "--lease-seconds", "4", QUEUE_APP_STEP="1.5")
        workers.wait_ready(proc)
        with agentdur.Runtime(database_url, executor_id="test-client") as client:
            handle = client.enqueue(queue_app.steps, "held", 1, queue="work", run_id="held")
            run = wait_for(
                lambda: (r := client.get_run("held")).owner and r, what="the worker's claim"
            )
            assert run.lease_until is not None
            # --lease-seconds 4: the lease ends within 4 s of the claim, not the app's 30
            assert (run.lease_until - client.clock()).total_seconds() <= 4.5
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
            out, err = workers.output(proc)
            assert code == 130, out + err
            assert_interrupted(err, f"agentdur: interrupted: worker {run.owner} stopped")
            assert client.get_run(handle.run_id).status == "SUCCEEDED"  # it let it finish
    finally:
        workers.kill_all()


def test_ctrl_c_in_a_command_is_one_line_and_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["db", "migrate", "--database-url", url]) == 0
    capsys.readouterr()
    monkeypatch.setattr(agentdur.Runtime, "list_runs", interrupted)
    code = main(["runs", "list", "--database-url", url])
    out, err = capsys.readouterr()
    assert (code, out, err) == (130, "", "agentdur: interrupted\n")


# -- worker options --------------------------------------------------------------------


def test_worker_lease_seconds_gives_a_runtime_like_the_apps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app_rt = queue_app.rt
    rt = worker_runtime(QUEUE_APP, None, lease_seconds=2.5)
    assert rt is not app_rt
    assert (rt.lease_seconds, rt.executor_id) == (2.5, app_rt.executor_id)
    assert rt.store.write_retry_seconds == app_rt.store.write_retry_seconds
    assert rt.poll_interval == app_rt.poll_interval
    assert worker_runtime(QUEUE_APP, None) is app_rt
    assert main(["worker", "--app", QUEUE_APP, "--lease-seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentdur: error: argument --lease-seconds: expected seconds (more")
    assert len(err.splitlines()) == 1


# -- | head ----------------------------------------------------------------------------


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with agentdur.Runtime(url) as rt:
        rt.run(queue_app.steps, "big", 1000, run_id="big")  # 1000 steps: ~100 KB of table
    for argv in (["runs", "show", "big"], ["runs", "steps", "big", "--json"]):
        proc = subprocess.Popen(
            [_agentdur(), *argv, "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()  # as `| head -1` does, then it goes away
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, err
        assert first and err == ""


# -- text ------------------------------------------------------------------------------


def test_timelines_print_non_ascii_text_as_text() -> None:
    step = StepInfo(
        run_id="r",
        step_index=2,
        kind="llm",
        name="scripted",
        status="SUCCEEDED",
        output={"response": {"text": "Désolé — a new lid is on its way ☕"}},
        started_at=datetime.now(timezone.utc),
    )
    assert timeline_line(step).endswith('answers "Désolé — a new lid is on its way ☕"')


@pytest.mark.usefixtures("history")
def test_fork_prints_an_edited_non_ascii_answer_as_text(database_url: str, tmp_path: Path) -> None:
    reply = tmp_path / "reply.json"
    reply.write_text(json.dumps({"text": "Désolé — nous remboursons"}), "utf-8")
    argv = ["fork", "c-a1", "--after-llm", "1", "--response-file", str(reply)]
    done = cli(database_url, *argv, "--new-run-id", "c-a1-fr", "--app", APP)
    assert (done.returncode, done.stderr) == (0, "")
    assert 'answers "Désolé — nous remboursons" [edited]' in done.stdout
    assert "\\u2014" not in done.stdout
    # a terminal that cannot show it gets escapes, not a UnicodeEncodeError
    done = cli(
        database_url, "runs", "show", "c-a1-fr", "--messages", env={"PYTHONIOENCODING": "ascii"}
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "D\\xe9sol\\xe9 \\u2014 nous remboursons" in done.stdout


# -- lookups ---------------------------------------------------------------------------


def test_runs_list_after_the_demo_names_its_database_and_the_demos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTDUR_DATABASE_URL", raising=False)
    (tmp_path / "demo-state").mkdir()
    assert main(["db", "migrate", "--database-url", "sqlite:///demo-state/support.db"]) == 0
    capsys.readouterr()

    assert main(["runs", "list"]) == 2  # no agentdur.db here
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "agentdur: error: no SQLite database at agentdur.db (the default database): give "
        "--database-url or set AGENTDUR_DATABASE_URL, or create one with `agentdur db "
        "migrate`; SQLite databases here: demo-state/support.db "
        "(--database-url sqlite:///demo-state/support.db)\n"
    )
    assert not (tmp_path / "agentdur.db").exists()

    assert main(["db", "migrate"]) == 0  # an empty agentdur.db
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    out, err = capsys.readouterr()
    assert out == "no runs found in sqlite:///agentdur.db\n"
    assert err == (
        "(runs in sqlite:///agentdur.db, the default database: give --database-url or set "
        "AGENTDUR_DATABASE_URL to read another; SQLite databases here: "
        "demo-state/support.db (--database-url sqlite:///demo-state/support.db))\n"
    )
    monkeypatch.setenv("AGENTDUR_DATABASE_URL", "sqlite:///demo-state/support.db")
    assert main(["runs", "list"]) == 0
    assert capsys.readouterr() == ("no runs found in sqlite:///demo-state/support.db\n", "")
