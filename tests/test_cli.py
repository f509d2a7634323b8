"""The `agentdur` command: tables, JSON, migrations and one-line errors, on both backends."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.cli import main
from agentdur.codec import dumps

UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/db"


@agentdur.step(name="test_cli.greet_step")
async def greet_step(name: str) -> str:
    return f"hello {name}"


@agentdur.step(name="test_cli.shout_step")
async def shout_step(text: str) -> str:
    return text.upper()


@agentdur.step(name="test_cli.explode_step")
async def explode_step() -> None:
    raise ValueError("boom at the bottom")


@agentdur.workflow(name="test_cli.greet")
async def greet(name: str) -> str:
    text = await greet_step(name)
    return await shout_step(text)


@agentdur.workflow(name="test_cli.fails")
async def fails() -> None:
    await greet_step("x")
    await explode_step()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(info: Any) -> Any:
    """A RunInfo/StepInfo as the CLI's JSON would hold it once parsed."""

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return {key: iso(value) for key, value in dataclasses.asdict(info).items()}


def table_rows(out: str) -> list[list[str]]:
    """The rows of an aligned table (header excluded), split on runs of two spaces."""
    lines = [line for line in out.splitlines() if line.strip()]
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines[1:]]


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agentdur: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def three_runs(rt: agentdur.Runtime) -> agentdur.Runtime:
    """Runs cli-1 and cli-2 of test_cli.greet (SUCCEEDED), then cli-3 of test_cli.fails."""
    assert rt.run(greet, "ada", run_id="cli-1") == "HELLO ADA"
    assert rt.run(greet, "bob", run_id="cli-2") == "HELLO BOB"
    with pytest.raises(ValueError, match="boom at the bottom"):
        rt.run(fails, run_id="cli-3")
    return rt


# -- runs list -------------------------------------------------------------------------


def test_runs_list_prints_runs_newest_first(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "list", "--database-url", database_url)
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == [
        "RUN",
        "ID",
        "WORKFLOW",
        "STATUS",
        "CREATED",
        "(UTC)",
        "DURATION",
    ]
    rows = table_rows(out)
    assert [row[:3] for row in rows] == [
        ["cli-3", "test_cli.fails", "FAILED"],
        ["cli-2", "test_cli.greet", "SUCCEEDED"],
        ["cli-1", "test_cli.greet", "SUCCEEDED"],
    ]
    created = three_runs.get_run("cli-1").created_at.astimezone(timezone.utc)
    assert rows[2][3] == created.strftime("%Y-%m-%d %H:%M:%S")


def test_runs_list_filters_and_limits(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "runs", "list", "--status", "failed", "--database-url", database_url
    )
    assert code == 0
    assert [row[0] for row in table_rows(out)] == ["cli-3"]
    code, out, _ = run_cli(
        capsys, "runs", "list", "--workflow", "test_cli.greet", "--database-url", database_url
    )
    assert [row[0] for row in table_rows(out)] == ["cli-2", "cli-1"]
    code, out, err = run_cli(capsys, "runs", "list", "--limit", "1", "--database-url", database_url)
    assert [row[0] for row in table_rows(out)] == ["cli-3"]
    assert "raise --limit" in err


def test_runs_list_json_equals_the_recorded_runs(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "list", "--json", "--database-url", database_url)
    assert code == 0
    parsed = json.loads(out)
    assert parsed == [as_json(run) for run in three_runs.list_runs()]
    assert [run["run_id"] for run in parsed] == ["cli-3", "cli-2", "cli-1"]
    assert parsed[1]["output"] == "HELLO BOB"
    assert parsed[0]["error"]["type"] == "ValueError"


def test_runs_list_on_an_empty_database(
    rt: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "runs", "list", "--database-url", database_url) == (
        0,
        f"no runs found in {rt.database_url}\n",
        "",
    )
    code, out, _ = run_cli(capsys, "runs", "list", "--json", "--database-url", database_url)
    assert (code, json.loads(out)) == (0, [])


# -- runs show / runs steps ------------------------------------------------------------


def header_of(out: str) -> dict[str, str]:
    block = out.split("\n\n")[0]
    return dict(line.split(None, 1) for line in block.splitlines() if " " in line.strip())


def test_runs_show_prints_header_and_steps_in_order(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "runs", "show", "cli-1", "--database-url", database_url)
    assert (code, err) == (0, "")
    header = header_of(out)
    assert header["run"] == "cli-1"
    assert header["workflow"] == "test_cli.greet"
    assert header["status"] == "SUCCEEDED"
    assert header["output"] == '"HELLO ADA"'
    assert '"ada"' in header["input"]
    assert header["finished"] != "-"
    steps = out.split("\n\n")[1].splitlines()
    assert steps[0].split() == ["#", "KIND", "NAME", "STATUS", "ATTEMPTS", "MS", "DETAIL"]
    rows = [line.split() for line in steps[1:]]
    assert [row[:5] for row in rows] == [
        ["0", "step", "test_cli.greet_step", "SUCCEEDED", "1"],
        ["1", "step", "test_cli.shout_step", "SUCCEEDED", "1"],
    ]


def test_runs_show_names_the_error_of_a_failed_run(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--database-url", database_url, "runs", "show", "cli-3")
    assert code == 0
    header = header_of(out)
    assert header["status"] == "FAILED"
    assert header["error"] == "ValueError: boom at the bottom"
    assert "output" not in header
    rows = [line.split() for line in out.split("\n\n")[1].splitlines()[1:]]
    assert [row[:4] for row in rows] == [
        ["0", "step", "test_cli.greet_step", "SUCCEEDED"],
        ["1", "step", "test_cli.explode_step", "ERROR"],
    ]
    assert "ValueError: boom at the bottom" in out.split("\n\n")[1].splitlines()[2]


def test_runs_steps_json_equals_the_recorded_steps(
    three_runs: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "runs", "steps", "cli-2", "--json", "--database-url", database_url
    )
    assert code == 0
    parsed = json.loads(out)
    assert parsed == [as_json(step) for step in three_runs.steps("cli-2")]
    assert [(s["name"], s["status"], s["output"]) for s in parsed] == [
        ("test_cli.greet_step", "SUCCEEDED", "hello bob"),
        ("test_cli.shout_step", "SUCCEEDED", "HELLO BOB"),
    ]
    code, out, _ = run_cli(
        capsys, "runs", "show", "cli-2", "--json", "--database-url", database_url
    )
    shown = json.loads(out)
    assert shown["status"] == "SUCCEEDED"
    assert shown["steps"] == parsed


def record_agent_run(rt: agentdur.Runtime, run_id: str) -> None:
    """A run with an llm step and a tool step, written through the store as an agent would."""
    now = datetime.now(timezone.utc)
    store = rt.store
    run = agentdur.RunInfo(
        run_id=run_id,
        workflow="test_cli.agent",
        status="RUNNING",
        input={"args": ["weather?"], "kwargs": {}},
        epoch=1,
        created_at=now,
        started_at=now,
    )
    assert store.create_run(run, input_json=dumps(run.input))
    llm = agentdur.StepInfo(
        run_id=run_id,
        step_index=0,
        name="model",
        kind="llm",
        status="SUCCEEDED",
        model="gpt-test-mini",
        usage={"input_tokens": 12, "output_tokens": 30},
        started_at=now,
        finished_at=now + timedelta(milliseconds=250),
    )
    arguments = {"city": "Paris", "units": "metric", "note": "x" * 100}
    tool = agentdur.StepInfo(
        run_id=run_id,
        step_index=1,
        name="get_weather",
        kind="tool",
        status="SUCCEEDED",
        input=arguments,
        started_at=now,
        finished_at=now + timedelta(milliseconds=40),
    )
    for step, value in ((llm, None), (tool, arguments)):
        store.record_step(
            step,
            epoch=1,
            input_json=None if value is None else dumps(value),
            output_json=dumps("ok"),
            error_json=None,
        )
    store.finish_run(
        run_id, epoch=1, status="SUCCEEDED", output_json=dumps("sunny"), error_json=None, now=now
    )


def test_llm_and_tool_steps_show_model_tokens_and_arguments(
    rt: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record_agent_run(rt, "cli-agent")
    code, out, _ = run_cli(capsys, "runs", "show", "cli-agent", "--database-url", database_url)
    assert code == 0
    llm_row, tool_row = out.split("\n\n")[1].splitlines()[1:]
    assert llm_row.split()[:4] == ["0", "llm", "model", "SUCCEEDED"]
    assert "250.0" in llm_row
    assert llm_row.endswith("  gpt-test-mini (12 in / 30 out tokens)")
    assert tool_row.split()[:4] == ["1", "tool", "get_weather", "SUCCEEDED"]
    # PostgreSQL's JSONB orders keys its own way: compare with the recorded arguments.
    recorded = rt.steps("cli-agent")[1].input
    assert recorded == {"city": "Paris", "units": "metric", "note": "x" * 100}
    assert tool_row.endswith("  " + json.dumps(recorded)[:57] + "...")
    assert '"city": "Paris"' in tool_row


# -- errors ----------------------------------------------------------------------------


def test_unknown_run_exits_2_with_one_line(
    rt: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("show", "steps"):
        code, out, err = run_cli(
            capsys, "runs", command, "no-such-run", "--database-url", database_url
        )
        assert (code, out) == (2, "")
        assert_one_error_line(err, f"no run with id 'no-such-run' in {rt.database_url}; ")
        assert err.count("agentdur runs list") == 1, err  # the hint once


def test_bad_url_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["runs", "list"], ["runs", "show", "x"], ["db", "migrate"]):
        code, out, err = run_cli(capsys, *argv, "--database-url", "mysql://x")
        assert (code, out) == (2, "")
        assert_one_error_line(err, "unsupported database URL 'mysql://x'", "sqlite:///")


def test_password_of_an_unreachable_database_is_never_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (
        ["runs", "list"],
        ["runs", "show", "x"],
        ["runs", "steps", "x"],
        ["db", "migrate"],
    ):
        code, out, err = run_cli(capsys, *argv, "--database-url", UNREACHABLE)
        assert code == 2
        assert_one_error_line(err, "cannot connect to PostgreSQL", "u:***@127.0.0.1:1")
        assert "secret" not in out + err


def test_argument_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["runs", "show"], "the following arguments are required: RUN_ID"),
        (["runs", "list", "--limit", "0"], "expected a positive whole number"),
        (["runs", "list", "--status", "done"], "invalid choice"),
        (["runs"], "agentdur runs --help"),
        (["nope"], "invalid choice"),
    ]
    for argv, fragment in cases:
        code, out, err = run_cli(capsys, *argv)
        assert (code, out) == (2, "")
        assert_one_error_line(err, fragment)


def test_reading_a_missing_sqlite_file_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    code, out, err = run_cli(capsys, "runs", "list", "--database-url", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert_one_error_line(err, f"no SQLite database at {path}", "agentdur db migrate")
    assert not path.exists()


def test_a_schema_newer_than_the_code_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert run_cli(capsys, "db", "migrate", "--database-url", url)[0] == 0
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (9999, '9999_future.sql')")
    for argv in (["runs", "list"], ["db", "migrate"]):
        code, out, err = run_cli(capsys, *argv, "--database-url", url)
        assert (code, out) == (2, "")
        assert_one_error_line(err, "schema version 9999", "Upgrade agentdur")


# -- database URL and db migrate -------------------------------------------------------


def test_database_url_from_the_environment_and_before_the_command(
    three_runs: agentdur.Runtime,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "--database-url", database_url, "runs", "list")
    assert (code, len(table_rows(out))) == (0, 3)
    code, out, _ = run_cli(capsys, "runs", "--database-url", database_url, "list")
    assert (code, len(table_rows(out))) == (0, 3)
    monkeypatch.setenv("AGENTDUR_DATABASE_URL", database_url)
    code, out, _ = run_cli(capsys, "runs", "list")
    assert (code, len(table_rows(out))) == (0, 3)
    monkeypatch.setenv("AGENTDUR_DATABASE_URL", "mysql://from-env")
    assert run_cli(capsys, "runs", "list")[0] == 2
    assert run_cli(capsys, "runs", "list", "--database-url", database_url)[0] == 0


def test_db_migrate_applies_then_reports_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, err = run_cli(capsys, "db", "migrate", "--database-url", url)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "applied migration 0001_initial.sql (version 1)"
    latest = agentdur.Runtime(url).store.migrations()[-1][0]
    assert out.splitlines()[-1].startswith(f"schema is now at version {latest} ")
    code, out, _ = run_cli(capsys, "db", "migrate", "--database-url", url)
    assert (code, out) == (0, f"schema is up to date (version {latest})\n")
    assert run_cli(capsys, "runs", "list", "--database-url", url)[:2] == (
        0,
        f"no runs found in {url}\n",
    )


def test_db_migrate_on_a_migrated_database_is_up_to_date(
    rt: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    latest = rt.store.migrations()[-1][0]
    code, out, _ = run_cli(capsys, "db", "migrate", "--database-url", database_url)
    assert (code, out) == (0, f"schema is up to date (version {latest})\n")


# -- the installed console script ------------------------------------------------------


def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("agentdur")
    found = str(script) if script.exists() else shutil.which("agentdur")
    assert found, "the agentdur console script is not installed (pip install -e .)"
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrate = subprocess.run(
        [found, "db", "migrate", "--database-url", url], capture_output=True, text=True, timeout=60
    )
    assert (migrate.returncode, migrate.stderr) == (0, "")
    assert "applied migration 0001_initial.sql" in migrate.stdout
    missing = subprocess.run(
        [found, "runs", "show", "nope", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (missing.returncode, missing.stdout) == (2, "")
    assert_one_error_line(missing.stderr, "no run with id 'nope'")
