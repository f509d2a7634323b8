"""`agentdur replay`, `fork`, `runs tree`, `runs show --messages` and `audit`, end to end.

Every command runs the installed `agentdur` console script in a subprocess from the
repository root with `--app tests.apps.audit_app:rt`, against a history recorded here
with that app's agent on each backend.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

import agentdur
from agentdur import recording
from agentdur.audit import Audit
from agentdur.cli_format import json_default, message_blocks
from tests.apps import audit_app
from tests.test_replay_fork import table_dump

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps.audit_app:rt"


def _script() -> str:
    script = Path(sys.executable).parent / "agentdur"
    found = str(script) if script.exists() else shutil.which("agentdur")
    assert found, "the agentdur console script is not installed (pip install -e .)"
    return found


def cli(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "AUDIT_APP_VERSION"}
    environment.update({"AGENTDUR_DATABASE_URL": database_url, **(env or {})})
    return subprocess.run(
        [_script(), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentdur: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def history(rt: agentdur.Runtime) -> agentdur.Runtime:
    for run_id, order in (("c-a1", "A1"), ("c-b2", "B2"), ("c-z9", "Z9")):
        rt.run_agent(audit_app.agent, f"Please refund order {order}.", run_id=run_id)
    rt.run(audit_app.greet, "ada", run_id="c-greet")
    with pytest.raises(ValueError, match="boom: x"):
        rt.run(audit_app.explode, "x", run_id="c-explode")
    audit_app.TOOL_LOG.clear()
    return rt


# -- replay ----------------------------------------------------------------------------


def test_replay_prints_the_timeline_and_writes_nothing(
    history: agentdur.Runtime, database_url: str
) -> None:
    before = table_dump(database_url)
    done = cli(database_url, "replay", "c-a1", "--app", APP)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0] == "replaying run c-a1 (agent:audit-support, SUCCEEDED)"
    assert [line.split()[:4] for line in lines[1:6]] == [
        ["0", "llm", "scripted", "SUCCEEDED"],
        ["1", "tool", "lookup_order", "SUCCEEDED"],
        ["2", "llm", "scripted", "SUCCEEDED"],
        ["3", "tool", "refund_order", "SUCCEEDED"],
        ["4", "llm", "scripted", "SUCCEEDED"],
    ]
    assert "calls refund_order" in lines[3]
    assert '"amount": 150.0' in lines[4]
    assert lines[6:] == ["replayed 5 steps: output matches the recording"]
    assert table_dump(database_url) == before


def test_replay_until_and_plain_and_failed_workflows(
    history: agentdur.Runtime, database_url: str
) -> None:
    done = cli(database_url, "replay", "c-a1", "--until", "2", "--app", APP)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1 + 3 + 1
    assert done.stdout.splitlines()[-1] == "replayed 3 steps: stopped after step 2 as asked"
    done = cli(database_url, "replay", "c-greet", "--app", APP)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1] == "replayed 2 steps: output matches the recording"
    done = cli(database_url, "replay", "c-explode", "--app", APP)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "replayed 2 steps: failed as recorded (ValueError: boom: x)"
    )


def test_replay_of_changed_code_exits_1_naming_the_divergence(
    history: agentdur.Runtime, database_url: str
) -> None:
    done = cli(database_url, "replay", "c-a1", "--app", APP, env={"AUDIT_APP_VERSION": "v2"})
    assert done.returncode == 1
    last = done.stdout.splitlines()[-1]
    assert last.startswith(
        "diverged after 0 steps: run 'c-a1' diverged from its recording at step 0"
    )
    assert (
        "new message 0 (system) changed at character 25: 'You are a support agent. Refund "
        "without looking orders up.' (recorded 'You are a support agent. Look orders up "
        "before refunding them.')"
    ) in last
    done = cli(database_url, "replay", "c-greet", "--app", APP, env={"AUDIT_APP_VERSION": "v2"})
    assert done.returncode == 1
    assert "recorded step 'audit_app.shout', the code now asks for step 'audit_app.whisper'" in (
        done.stdout
    )


def test_replay_the_last_runs_of_an_agent(history: agentdur.Runtime, database_url: str) -> None:
    for flags in (["--agent", "audit-support"], ["--workflow", "agent:audit-support"]):
        done = cli(database_url, "replay", *flags, "--last", "2", "--app", APP)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split()[:3] for line in lines[:2]] == [
            ["c-z9", "SUCCEEDED", "ok"],
            ["c-b2", "SUCCEEDED", "ok"],
        ]
        assert lines[2] == "2 of 2 runs match their recording"
    done = cli(
        database_url,
        "replay",
        "--agent",
        "audit-support",
        "--app",
        APP,
        env={"AUDIT_APP_VERSION": "v2"},
    )
    assert done.returncode == 1
    assert [line.split()[2] for line in done.stdout.splitlines()[:3]] == ["DIVERGED"] * 3
    assert done.stdout.splitlines()[-1] == "0 of 3 runs match their recording"


def test_replay_usage_errors_exit_2(history: agentdur.Runtime, database_url: str) -> None:
    one_error_line(cli(database_url, "replay", "nope", "--app", APP), "no run with id 'nope'")
    one_error_line(
        cli(database_url, "replay", "c-a1", "--app", "tests.apps.audit_app"), "must be MODULE:ATTR"
    )
    one_error_line(
        cli(database_url, "replay", "c-a1", "--app", "tests.apps.missing:rt"),
        "cannot import 'tests.apps.missing'",
        "ModuleNotFoundError",
    )
    one_error_line(
        cli(database_url, "replay", "c-a1", "--app", "tests.apps.audit_app:agent"),
        "is a Agent, not an agentdur.Runtime",
    )
    one_error_line(cli(database_url, "replay", "--app", APP), "give a RUN_ID")
    one_error_line(cli(database_url, "replay", "c-a1"), "required: --app")
    one_error_line(
        cli(database_url, "replay", "--workflow", "nothing", "--app", APP),
        "no recorded runs of workflow 'nothing'",
    )


def test_database_url_overrides_the_apps_database(
    history: agentdur.Runtime, database_url: str, tmp_path: Path
) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    one_error_line(cli(elsewhere, "replay", "c-a1", "--app", APP), "no run with id 'c-a1'")
    done = cli(elsewhere, "replay", "c-a1", "--app", APP, "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "replayed 5 steps: output matches the recording"


# -- fork, tree, messages --------------------------------------------------------------


def test_fork_after_an_llm_response_with_a_response_file(
    history: agentdur.Runtime, database_url: str, tmp_path: Path
) -> None:
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({"text": "A supervisor will call you about order A1."}))
    done = cli(
        database_url,
        "fork",
        "c-a1",
        "--after-llm",
        "2",
        "--response-file",
        str(answer),
        "--new-run-id",
        "c-a1-edited",
        "--app",
        APP,
    )
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0] == "forked run c-a1 at step 2 into c-a1-edited (edited response)"
    assert lines[-2:] == [
        "run c-a1-edited: SUCCEEDED",
        "answer: A supervisor will call you about order A1.",
    ]
    steps = history.steps("c-a1-edited")
    assert [(s.name, s.inherited_from, s.edited) for s in steps] == [
        ("scripted", "c-a1", False),
        ("lookup_order", "c-a1", False),
        ("scripted", None, True),
    ]
    assert audit_app.TOOL_LOG == []


def test_fork_dry_run_with_another_model_then_the_tree(
    history: agentdur.Runtime, database_url: str
) -> None:
    done = cli(
        database_url,
        "fork",
        "c-a1",
        "--after-llm",
        "1",
        "--dry-run",
        "--model",
        "scripted-v2",
        "--new-run-id",
        "c-a1-dry",
        "--app",
        APP,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "forked run c-a1 at step 1 into c-a1-dry (model scripted-v2, dry run)"
    assert [line.split()[:3] for line in lines[1:6]] == [
        ["0", "llm", "scripted"],
        ["1", "tool", "lookup_order"],
        ["2", "llm", "scripted-v2"],
        ["3", "tool", "refund_order"],
        ["4", "llm", "scripted-v2"],
    ]
    assert lines[1].endswith("[inherited]") and lines[4].endswith("[dry-run]")
    assert lines[6] == "run c-a1-dry: SUCCEEDED"
    # lookup_order (read_only) ran again in the subprocess; the refund did not run at all.
    assert [s.dry_run for s in history.steps("c-a1-dry")] == [False, False, False, True, False]

    done = cli(
        database_url, "fork", "c-a1-dry", "--at", "4", "--new-run-id", "c-a1-dry-2", "--app", APP
    )
    assert done.returncode == 0, done.stderr
    done = cli(database_url, "runs", "tree", "c-a1")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        "c-a1  SUCCEEDED  agent:audit-support",
        "    c-a1-dry  SUCCEEDED  forked at step 1, model scripted-v2, dry run",
        "        c-a1-dry-2  SUCCEEDED  forked at step 4",
    ]
    done = cli(database_url, "runs", "tree", "c-a1-dry")
    assert done.stdout.splitlines()[0] == (
        "c-a1-dry  SUCCEEDED  agent:audit-support, forked from c-a1 at step 1"
    )
    one_error_line(cli(database_url, "runs", "tree", "nope"), "no run with id 'nope'")


def test_fork_usage_errors_exit_2_and_write_nothing(
    history: agentdur.Runtime, database_url: str, tmp_path: Path
) -> None:
    answer = tmp_path / "answer.json"
    answer.write_text('{"text": "hi"}')
    before = table_dump(database_url)
    one_error_line(
        cli(database_url, "fork", "c-a1", "--after-llm", "4", "--app", APP),
        "--after-llm 4: run 'c-a1' has 3 LLM responses (steps 0, 2, 4)",
    )
    one_error_line(
        cli(
            database_url, "fork", "c-a1", "--at", "1", "--response-file", str(answer), "--app", APP
        ),
        "step 1 of run 'c-a1' is a tool step ('lookup_order')",
    )
    one_error_line(
        cli(database_url, "fork", "c-a1", "--at", "9", "--app", APP), "at_step 9 is out of range"
    )
    one_error_line(
        cli(
            database_url, "fork", "c-a1", "--at", "1", "--response-file", "none.json", "--app", APP
        ),
        "cannot read --response-file",
    )
    one_error_line(cli(database_url, "fork", "c-a1", "--app", APP), "one of the arguments --at")
    bad_files = [
        ('{"txt": "hi"}', "unknown key 'txt' (known: text, tool_calls, stop_reason, usage, "),
        ('{"tool_calls": [{"name": "x", "args": {}}]}', "unknown tool_calls[0] key 'args'"),
        ('{"text": "hi", "usage": {"input": 3}}', "unknown usage key 'input'"),
        ('{"tool_calls": [{"arguments": {}}]}', 'tool_calls[0] must be an object with a "name"'),
        ('["hi"]', 'must hold a JSON object like {"text": "..."}'),
        ('{"text": "hi",}', "is not JSON (Expecting property name"),
    ]
    for content, fragment in bad_files:
        answer.write_text(content)
        argv = ["fork", "c-a1", "--after-llm", "1", "--response-file", str(answer), "--app", APP]
        one_error_line(cli(database_url, *argv), f"--response-file {answer}", fragment)
    assert table_dump(database_url) == before


def test_runs_show_messages_prints_the_conversation(
    history: agentdur.Runtime, database_url: str
) -> None:
    done = cli(database_url, "runs", "show", "c-z9", "--messages")
    assert (done.returncode, done.stderr) == (0, "")
    messages = recording.conversation(history.steps("c-z9"))
    assert done.stdout == message_blocks(messages) + "\n"
    blocks = done.stdout.rstrip("\n").split("\n\n")
    assert [block.splitlines()[0].split()[:2] for block in blocks] == [
        ["[0]", "system"],
        ["[1]", "user"],
        ["[2]", "assistant"],
        ["[3]", "tool"],
        ["[4]", "assistant"],
        ["[5]", "tool"],
        ["[6]", "assistant"],
    ]
    assert blocks[0].splitlines()[1] == audit_app.INSTRUCTIONS
    assert blocks[1].splitlines()[1] == "Please refund order Z9."
    assert blocks[2].splitlines()[1].startswith('-> lookup_order {"order_id": "Z9"} (call ')
    assert blocks[5].splitlines()[0].endswith(" error")
    assert blocks[5].splitlines()[1] == "Error: RuntimeError: card declined"
    assert blocks[6].splitlines()[1] == (
        "The refund of Z9 failed: Error: RuntimeError: card declined"
    )
    done = cli(database_url, "runs", "show", "c-z9", "--messages", "--json")
    assert [m["role"] for m in json.loads(done.stdout)] == [m.role for m in messages]
    done = cli(database_url, "runs", "show", "c-greet", "--messages")
    assert done.stdout == "run c-greet has no LLM steps: there is no conversation\n"


# -- audit -----------------------------------------------------------------------------


def as_json(value: object) -> object:
    return json.loads(json.dumps(dataclasses.asdict(value), default=json_default))  # type: ignore[call-overload]


def test_audit_tools_table_json_and_csv(history: agentdur.Runtime, database_url: str) -> None:
    history.fork("c-a1", 4, new_run_id="c-a1-fork").result()
    audit = Audit(history)
    done = cli(database_url, "audit", "tools", "--json")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == [as_json(c) for c in audit.tool_calls()]
    assert len(json.loads(done.stdout)) == 8

    done = cli(database_url, "audit", "tools", "--tool", "refund_order")
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "STARTED",
        "(UTC)",
        "RUN",
        "AGENT",
        "#",
        "TOOL",
        "EFFECT",
        "STATUS",
        "ARGUMENTS",
        "RESULT",
        "FLAGS",
    ]
    rows = {line.split()[2]: line for line in lines[1:]}
    assert sorted(rows) == ["c-a1", "c-a1-fork", "c-b2", "c-z9"]
    assert rows["c-a1-fork"].endswith("  inherited")
    assert not rows["c-a1"].endswith("inherited")
    assert "RuntimeError: card declined" in rows["c-z9"]
    assert rows["c-b2"].split()[3:8] == [
        "audit-support",
        "3",
        "refund_order",
        "side_effect",
        "SUCCEEDED",
    ]

    done = cli(database_url, "audit", "tools", "--status", "error", "--csv")
    parsed = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["run_id"], r["tool"], r["status"]) for r in parsed] == [
        ("c-z9", "refund_order", "ERROR")
    ]
    assert json.loads(parsed[0]["error"])["message"] == "card declined"

    done = cli(
        database_url,
        "audit",
        "tools",
        "--run",
        "c-b2",
        "--effect",
        "read_only",
        "--agent",
        "audit-support",
        "--since",
        "2h",
        "--json",
    )
    assert [(c["run_id"], c["tool"]) for c in json.loads(done.stdout)] == [("c-b2", "lookup_order")]
    done = cli(database_url, "audit", "tools", "--since", "2999-01-01")
    assert done.stdout == "no tool calls found\n"
    one_error_line(cli(database_url, "audit", "tools", "--since", "soon"), "since 'soon'")
    one_error_line(cli(database_url, "audit", "tools", "--json", "--csv"), "not allowed with")


def test_audit_usage(history: agentdur.Runtime, database_url: str) -> None:
    done = cli(database_url, "audit", "usage")
    assert (done.returncode, done.stderr) == (0, "")
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines == [
        ["RUN", "CALLS", "INPUT", "TOKENS", "OUTPUT", "TOKENS", "TOTAL"],
        ["c-a1", "3", "300", "30", "330"],
        ["c-b2", "3", "300", "30", "330"],
        ["c-z9", "3", "300", "30", "330"],
        ["total", "9", "900", "90", "990"],
    ]
    done = cli(database_url, "audit", "usage", "--by", "model", "--json")
    assert json.loads(done.stdout) == [
        {
            "group": "scripted",
            "calls": 9,
            "input_tokens": 900,
            "output_tokens": 90,
            "total_tokens": 990,
        }
    ]
    done = cli(
        database_url, "audit", "usage", "--agent", "audit-support", "--run", "c-b2", "--by", "agent"
    )
    assert done.stdout.splitlines()[1].split() == ["audit-support", "3", "300", "30", "330"]
    done = cli(database_url, "audit", "usage", "--agent", "nobody")
    assert done.stdout == "no LLM calls found\n"


# -- the README's debugging commands, verbatim -----------------------------------------


def readme_block(heading: str, language: str) -> str:
    """The first fenced block of `language` after the README heading matching `heading`."""
    text = (ROOT / "README.md").read_text("utf-8")
    found = re.search(rf"^#+ .*{heading}.*$", text, re.MULTILINE)
    assert found, f"README.md has no heading matching {heading!r}"
    block = re.search(rf"^```{language}\n(.*?)^```", text[found.end() :], re.S | re.M)
    assert block, f"README.md has no {language} block under {found.group()!r}"
    return block.group(1)


def readme_sql(heading: str) -> list[str]:
    """Every SQL block between the heading matching `heading` and the next heading."""
    text = (ROOT / "README.md").read_text("utf-8")
    found = re.search(rf"^#+ .*{heading}.*$", text, re.MULTILINE)
    assert found
    section = re.split(r"^#", text[found.end() :], maxsplit=1, flags=re.M)[0]
    return re.findall(r"^```sql\n(.*?)^```", section, re.S | re.M)


def commands_and_outputs(block: str) -> list[tuple[str, list[str]]]:
    """The block's command lines, each with the `#` lines after it (what it prints)."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("#"):
            assert commands, f"an output line before any command: {line!r}"
            commands[-1][1].append(line[1:])
        elif line.strip():
            commands.append((line, []))
    return commands


def printed_in_order(expected: list[str], out: str) -> None:
    """Each expected line matches a later line of `out`; `...` stands for anything."""
    lines = [" ".join(line.split()) for line in out.splitlines()]
    position = 0
    for want in expected:
        parts = [re.escape(" ".join(part.split())) for part in want.split("...")]
        pattern = re.compile(".*".join(parts))
        while position < len(lines) and not pattern.search(lines[position]):
            position += 1
        assert position < len(lines), f"{want.strip()!r} not printed in order:\n{out}"
        position += 1


def demo_folder(folder: Path) -> Path:
    """A folder holding a copy of the demo where a repository root holds it."""
    (folder / "examples").mkdir()
    for name in ("support_agent.py", "payments_service.py"):
        shutil.copy(ROOT / "examples" / name, folder / "examples" / name)
    return folder


def test_the_readmes_debugging_commands_work_verbatim_on_the_demos_database(
    tmp_path: Path,
) -> None:
    folder = demo_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDUR_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    commands = commands_and_outputs(readme_block("Debugging", "bash"))
    assert len(commands) >= 10
    for command, expected in commands:
        exported = re.fullmatch(r"export (\w+)=(\S+)", command.strip())
        if exported:
            env[exported.group(1)] = exported.group(2)
            continue
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, done.stderr) == (0, ""), f"{command}\n{done.stdout}"
        printed_in_order(expected, done.stdout)

    # The audit SQL finds the demo's one refund: not the dry-run fork's simulated one, nor
    # the copy a fork after the refund inherits.
    inherit = "agentdur fork support-demo --at 4 --new-run-id support-after --app "
    done = subprocess.run(
        ["bash", "-c", inherit + "examples.support_agent:rt"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert re.search(r"3 +tool +refund_order +SUCCEEDED .*\[inherited\]", done.stdout)
    database = folder / "demo-state" / "support.db"
    refunds, failures = readme_sql("SQLite")
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(refunds).fetchall()
        assert [row[:4] for row in rows] == [("support-demo", "support", "A1042", 39.0)]
        assert conn.execute(failures).fetchall() == []
        columns = [c[1] for c in conn.execute("PRAGMA table_info(tool_calls)").fetchall()]
    csv_header = commands[-1][1][-1].strip()
    assert csv_header.split(",") == columns  # `agentdur audit tools --csv`: the view's columns


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_readmes_postgres_audit_sql_finds_the_demos_refund(
    tmp_path: Path, database_url: str
) -> None:
    postgres_url = database_url  # emptied
    folder = demo_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDUR_")}
    demo = [sys.executable, "examples/support_agent.py", "--database-url", postgres_url]
    done = subprocess.run(demo, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    fork = ["fork", "support-demo", "--at", "2", "--dry-run", "--new-run-id", "support-dry"]
    done = subprocess.run(
        [_script(), *fork, "--app", "examples.support_agent:rt", "--database-url", postgres_url],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    refunds, failures = readme_sql("PostgreSQL")
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(refunds).fetchall()
        assert [row[:4] for row in rows] == [("support-demo", "support", "A1042", Decimal("39"))]
        assert conn.execute(failures).fetchall() == []
