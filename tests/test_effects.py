"""The effect ledger of side-effecting tools, on SQLite and PostgreSQL.

Checked the way a user would: the run's status and error, the recorded steps, the audit,
what the model was told, and the `effects` table read with plain SQL. The crash tests at
the end kill a real process inside the tool and recover with another executor.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.cli_operations import add_operation_parsers
from agentdur.models import AssistantMessage, Message, ScriptInfo, ToolResultMessage
from agentdur.testing import Scripted
from tests.apps.effects_db import ledger, query
from tests.helpers import wait_for

APP = Path(__file__).parent / "apps" / "effects_app.py"

CALLS: list[dict[str, Any]] = []
"""One entry per execution of a refund tool: run, step, key, attempt, order."""
PLAN: dict[str, list[BaseException | None]] = {}
"""order id -> what each successive execution raises (None: succeed)."""
LEDGER_DURING_CALL: list[Any] = []
URL: list[str] = []


@pytest.fixture(autouse=True)
def _reset(database_url: str) -> Iterator[None]:
    CALLS.clear()
    PLAN.clear()
    LEDGER_DURING_CALL.clear()
    URL[:] = [database_url]
    yield


def _refund(order_id: str, amount: int, ctx: agentdur.ToolContext) -> dict[str, Any]:
    """Refund an order."""
    CALLS.append(
        {
            "run_id": ctx.run_id,
            "step_index": ctx.step_index,
            "key": ctx.idempotency_key,
            "attempt": ctx.attempt,
            "order_id": order_id,
        }
    )
    LEDGER_DURING_CALL.append(
        (
            ledger(URL[0]),
            query(
                URL[0],
                "SELECT status, idempotency_key FROM {p}steps WHERE run_id = ? AND step_index = ?",
                (ctx.run_id, ctx.step_index),
            ),
        )
    )
    planned = PLAN.get(order_id)
    if planned:
        failure = planned.pop(0)
        if failure is not None:
            raise failure
    return {"refund_id": f"re_{len(CALLS)}", "order_id": order_id, "amount": amount}


refund_fmt = agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_order")(
    _refund
)
refund_fn = agentdur.tool(
    effect="side_effect",
    key=lambda args: f"refund:{args['order_id']}",
    name="refund_order",
)(_refund)
refund_retrying = agentdur.tool(effect="side_effect", retries=1, name="refund_order")(_refund)
KEYED = {"format": refund_fmt, "callable": refund_fn}


@agentdur.tool(effect="idempotent")
def send_note(text: str, ctx: agentdur.ToolContext) -> str:
    """Send a note."""
    CALLS.append({"run_id": ctx.run_id, "step_index": ctx.step_index, "key": ctx.idempotency_key})
    return "sent"


class Script:
    """A Scripted function that answers by turn and keeps every request it was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = answers
        self.requests: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> Any:
        self.requests.append(messages)
        return self.answers[sum(isinstance(m, AssistantMessage) for m in messages)]

    def tool_results(self) -> list[tuple[str, bool]]:
        """(content, is_error) of the tool results in the last request."""
        last = self.requests[-1]
        return [(m.content, m.is_error) for m in last if isinstance(m, ToolResultMessage)]


def refund_agent(
    name: str, tool: agentdur.Tool, order_id: str = "A1", amount: int = 500
) -> tuple[agentdur.Agent, Script]:
    script = Script(
        Scripted.tool_call("refund_order", {"order_id": order_id, "amount": amount}), "done"
    )
    return agentdur.Agent(name, Scripted(script), tools=[tool]), script


def _steps(rt: agentdur.Runtime, run_id: str) -> list[tuple[int, str, str, str]]:
    return [(s.step_index, s.kind, s.name, s.status) for s in rt.steps(run_id)]


# -- the ledger, keys and deduplication --------------------------------------------------


@pytest.mark.parametrize("style", ["format", "callable"])
def test_ledger_is_written_before_and_after_the_call(rt: agentdur.Runtime, style: str) -> None:
    agent, _ = refund_agent(f"ledger-{style}", KEYED[style])
    result = rt.run_agent(agent, "refund A1", run_id="r-ledger")
    assert result.output == "done"
    # While the tool ran, its entry was already in the ledger and its step STARTED.
    assert LEDGER_DURING_CALL == [
        (
            [("refund:A1", "r-ledger", 1, "refund_order", "STARTED", None)],
            [("STARTED", "refund:A1")],
        )
    ]
    first = {"refund_id": "re_1", "order_id": "A1", "amount": 500}
    assert ledger(URL[0]) == [("refund:A1", "r-ledger", 1, "refund_order", "DONE", first)]
    step = rt.steps("r-ledger")[1]
    assert (step.status, step.idempotency_key, step.output, step.deduplicated) == (
        "SUCCEEDED",
        "refund:A1",
        first,
        False,
    )
    assert CALLS[0]["key"] == "refund:A1"


@pytest.mark.parametrize("style", ["format", "callable"])
def test_same_domain_key_in_another_run_returns_the_first_result(
    rt: agentdur.Runtime, style: str
) -> None:
    agent, _ = refund_agent(f"dedup-{style}", KEYED[style])
    rt.run_agent(agent, "refund A1", run_id="first")
    again, script = refund_agent(f"dedup-{style}-2", KEYED[style])
    result = rt.run_agent(again, "refund A1 please", run_id="second")

    assert result.output == "done"
    assert len(CALLS) == 1  # the second run did not execute the refund
    first = {"refund_id": "re_1", "order_id": "A1", "amount": 500}
    step = rt.steps("second")[1]
    assert (step.status, step.output, step.deduplicated, step.idempotency_key) == (
        "SUCCEEDED",
        first,
        True,
        "refund:A1",
    )
    assert script.tool_results() == [
        (json.dumps(first, sort_keys=True, separators=(",", ":")), False)
    ]
    audit = {(c.run_id, c.step_index): c.deduplicated for c in rt.audit.tool_calls("refund_order")}
    assert audit == {("first", 1): False, ("second", 1): True}
    assert ledger(URL[0]) == [("refund:A1", "first", 1, "refund_order", "DONE", first)]


def test_a_fork_re_executing_the_refund_is_deduplicated(rt: agentdur.Runtime) -> None:
    agent, _ = refund_agent("dedup-fork", refund_fmt)
    rt.run_agent(agent, "refund A1", run_id="source")
    fork = rt.fork("source", at_step=1, new_run_id="forked")
    assert fork.result()["output"] == "done"

    assert len(CALLS) == 1
    step = rt.steps("forked")[1]
    assert (step.status, step.deduplicated, step.inherited_from) == ("SUCCEEDED", True, None)
    assert step.output == rt.steps("source")[1].output
    flags = {c.run_id: c.deduplicated for c in rt.audit.tool_calls("refund_order")}
    assert flags == {"source": False, "forked": True}


def test_other_keys_are_not_deduplicated(rt: agentdur.Runtime) -> None:
    agent, _ = refund_agent("dedup-other", refund_fmt, order_id="A1")
    rt.run_agent(agent, "refund A1", run_id="a1")
    other, _ = refund_agent("dedup-other-2", refund_fmt, order_id="A2")
    rt.run_agent(other, "refund A2", run_id="a2")
    assert [c["key"] for c in CALLS] == ["refund:A1", "refund:A2"]
    assert [row[0] for row in ledger(URL[0])] == ["refund:A1", "refund:A2"]


def test_idempotency_key_without_a_domain_key_is_run_and_step(rt: agentdur.Runtime) -> None:
    PLAN["A1"] = [ValueError("flaky"), None]  # the first attempt fails, the retry succeeds
    script = Script(
        Scripted.tool_calls(
            [("send_note", {"text": "hi"}), ("refund_order", {"order_id": "A1", "amount": 1})]
        ),
        "done",
    )
    agent = agentdur.Agent("keys", Scripted(script), tools=[send_note, refund_retrying])
    rt.run_agent(agent, "go", run_id="k1")
    keys = sorted((c["step_index"], c["key"], c.get("attempt")) for c in CALLS)
    assert keys == [(1, "k1:1", None), (2, "k1:2", 1), (2, "k1:2", 2)]
    steps = rt.steps("k1")
    assert (steps[2].idempotency_key, steps[2].attempts, steps[2].status) == (
        "k1:2",
        2,
        "SUCCEEDED",
    )
    assert steps[1].idempotency_key == "k1:1"
    assert [row[:5] for row in ledger(URL[0])] == [("k1:2", "k1", 2, "refund_order", "DONE")]


# -- a tool that raises --------------------------------------------------------------------


def test_a_raising_tool_counts_as_not_executed(rt: agentdur.Runtime) -> None:
    PLAN["A1"] = [ValueError("card declined")]
    agent, script = refund_agent("raising", refund_fmt)
    assert rt.run_agent(agent, "refund A1", run_id="declined").output == "done"

    step = rt.steps("declined")[1]
    assert step.status == "ERROR"
    assert (step.error["type"], step.error["message"]) == ("ValueError", "card declined")
    assert script.tool_results() == [("Error: ValueError: card declined", True)]
    assert ledger(URL[0]) == []  # released: the key is free again

    again, _ = refund_agent("raising-2", refund_fmt)
    rt.run_agent(again, "refund A1", run_id="retried")
    assert [c["run_id"] for c in CALLS] == ["declined", "retried"]
    assert rt.steps("retried")[1].deduplicated is False
    assert [row[:5] for row in ledger(URL[0])] == [
        ("refund:A1", "retried", 1, "refund_order", "DONE")
    ]


# -- uncertain effects and resolve ------------------------------------------------------------


def _uncertain_run(rt: agentdur.Runtime, name: str, run_id: str) -> Script:
    PLAN["A1"] = [agentdur.UncertainEffect("the bank timed out"), None]
    agent, script = refund_agent(name, refund_fmt)
    handle = rt.start_agent(agent, "refund A1", run_id=run_id)
    with pytest.raises(agentdur.NeedsAttentionError) as caught:
        handle.result(timeout=30)
    assert caught.value.step_index == 1
    return script


def test_uncertain_effect_stops_the_run_as_needs_attention(rt: agentdur.Runtime) -> None:
    _uncertain_run(rt, "uncertain", "u1")
    run = rt.get_run("u1")
    assert (run.status, run.owner) == ("NEEDS_ATTENTION", None)
    assert run.error == {
        "type": "NeedsAttention",
        "message": "tool 'refund_order' cannot tell: the bank timed out",
        "step_index": 1,
        "tool": "refund_order",
    }
    assert _steps(rt, "u1") == [
        (0, "llm", "scripted", "SUCCEEDED"),
        (1, "tool", "refund_order", "STARTED"),
    ]
    assert ledger(URL[0]) == [("refund:A1", "u1", 1, "refund_order", "STARTED", None)]
    assert rt.recover() == []  # nobody continues it without a decision
    assert rt.get_run("u1").status == "NEEDS_ATTENTION"


def test_resolve_with_a_result_records_it_without_executing(rt: agentdur.Runtime) -> None:
    script = _uncertain_run(rt, "resolve-result", "u2")
    rt.resolve("u2", 1, "result", {"refund_id": "re_checked"})
    assert rt.handle("u2").result(timeout=30)["output"] == "done"

    assert len(CALLS) == 1
    step = rt.steps("u2")[1]
    assert (step.status, step.output) == ("SUCCEEDED", {"refund_id": "re_checked"})
    assert script.tool_results() == [('{"refund_id":"re_checked"}', False)]
    assert ledger(URL[0]) == [
        ("refund:A1", "u2", 1, "refund_order", "DONE", {"refund_id": "re_checked"})
    ]
    # The resolved result is what the key now answers, in any run.
    again, _ = refund_agent("resolve-result-2", refund_fmt)
    rt.run_agent(again, "refund A1", run_id="u2-again")
    step = rt.steps("u2-again")[1]
    assert (step.deduplicated, step.output) == (True, {"refund_id": "re_checked"})
    assert len(CALLS) == 1


def test_resolve_retry_executes_the_tool_again(rt: agentdur.Runtime) -> None:
    _uncertain_run(rt, "resolve-retry", "u3")
    rt.resolve("u3", 1, "retry")
    assert rt.handle("u3").result(timeout=30)["output"] == "done"
    assert [(c["run_id"], c["key"]) for c in CALLS] == [("u3", "refund:A1"), ("u3", "refund:A1")]
    step = rt.steps("u3")[1]
    assert (step.status, step.output["refund_id"]) == ("SUCCEEDED", "re_2")
    assert ledger(URL[0])[0][4:] == ("DONE", {"refund_id": "re_2", "order_id": "A1", "amount": 500})


def test_resolve_fail_gives_the_model_the_error(rt: agentdur.Runtime) -> None:
    script = _uncertain_run(rt, "resolve-fail", "u4")
    rt.resolve("u4", 1, "fail", "the bank has no record of it; refund by hand")
    assert rt.handle("u4").result(timeout=30)["output"] == "done"
    step = rt.steps("u4")[1]
    assert step.status == "ERROR"
    assert step.error == {
        "type": "ResolvedAsFailed",
        "message": "the bank has no record of it; refund by hand",
    }
    assert script.tool_results() == [
        ("Error: ResolvedAsFailed: the bank has no record of it; refund by hand", True)
    ]
    assert ledger(URL[0]) == []
    assert len(CALLS) == 1


def test_resolve_errors_name_what_is_wrong(rt: agentdur.Runtime) -> None:
    _uncertain_run(rt, "resolve-errors", "u5")
    with pytest.raises(agentdur.UsageError) as caught:
        rt.resolve("u5", 1, "skip")
    assert str(caught.value) == "action must be 'retry', 'result' or 'fail', not 'skip'"
    with pytest.raises(agentdur.UsageError) as caught:
        rt.resolve("u5", 0, "retry")
    assert str(caught.value) == (
        "step 0 of run 'u5' (NEEDS_ATTENTION) is not waiting for resolution (llm step, SUCCEEDED)"
    )
    with pytest.raises(agentdur.UsageError) as caught:
        rt.resolve("u5", 7, "retry")
    assert str(caught.value) == (
        "step 7 of run 'u5' (NEEDS_ATTENTION) is not waiting for resolution (not recorded)"
    )
    with pytest.raises(agentdur.RunNotFoundError):
        rt.resolve("nope", 1, "retry")
    assert rt.get_run("u5").status == "NEEDS_ATTENTION"  # nothing changed
    rt.resolve("u5", 1, "result", {"refund_id": "x"})
    rt.handle("u5").result(timeout=30)
    with pytest.raises(agentdur.UsageError) as caught:
        rt.resolve("u5", 1, "retry")
    assert str(caught.value) == (
        "step 1 of run 'u5' (SUCCEEDED) is not waiting for resolution (tool step, SUCCEEDED)"
    )


def test_a_key_held_by_an_unsettled_step_stops_the_other_run_resolvably(
    rt: agentdur.Runtime,
) -> None:
    _uncertain_run(rt, "held", "holder")
    other, _ = refund_agent("held-2", refund_fmt)
    handle = rt.start_agent(other, "refund A1", run_id="waiter")
    with pytest.raises(agentdur.NeedsAttentionError):
        handle.result(timeout=30)
    run = rt.get_run("waiter")
    assert run.error == {
        "type": "NeedsAttention",
        "message": "the effect key 'refund:A1' is held by run holder step 1, whose outcome "
        "is not known",
        "step_index": 1,
        "tool": "refund_order",
    }
    step = rt.steps("waiter")[1]
    assert (step.status, step.idempotency_key) == ("STARTED", "refund:A1")
    assert ledger(URL[0]) == [("refund:A1", "holder", 1, "refund_order", "STARTED", None)]

    # Retrying the waiter while the holder is unsettled stops it again, harmlessly.
    rt.resolve("waiter", 1, "retry")
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.handle("waiter").result(timeout=30)
    # Once the holder is settled, the waiter's retry gets the holder's result.
    rt.resolve("holder", 1, "result", {"refund_id": "re_bank"})
    rt.handle("holder").result(timeout=30)
    rt.resolve("waiter", 1, "retry")
    assert rt.handle("waiter").result(timeout=30)["output"] == "done"
    step = rt.steps("waiter")[1]
    assert (step.status, step.output, step.deduplicated) == (
        "SUCCEEDED",
        {"refund_id": "re_bank"},
        True,
    )
    assert len(CALLS) == 1
    assert ledger(URL[0]) == [
        ("refund:A1", "holder", 1, "refund_order", "DONE", {"refund_id": "re_bank"})
    ]


def test_resolving_the_waiter_with_a_result_leaves_the_holders_entry_alone(
    rt: agentdur.Runtime,
) -> None:
    _uncertain_run(rt, "held-result", "holder2")
    other, _ = refund_agent("held-result-2", refund_fmt)
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.start_agent(other, "refund A1", run_id="waiter2").result(timeout=30)
    rt.resolve("waiter2", 1, "result", {"refund_id": "re_seen"})
    rt.handle("waiter2").result(timeout=30)
    assert rt.steps("waiter2")[1].output == {"refund_id": "re_seen"}
    assert ledger(URL[0]) == [("refund:A1", "holder2", 1, "refund_order", "STARTED", None)]
    rt.resolve("holder2", 1, "fail", "never happened")
    rt.handle("holder2").result(timeout=30)
    assert ledger(URL[0]) == []


# -- crashes: a process killed inside the tool, recovered by another executor ----------


def _spawn(mode: str, url: str, workdir: Path, run_id: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), mode, url, str(workdir), run_id],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when_blocked(proc: subprocess.Popen[str], workdir: Path) -> None:
    try:
        wait_for(
            lambda: (workdir / "blocked").exists() or proc.poll() is not None,
            timeout=60,
            what="the tool to block",
        )
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _recover(url: str, workdir: Path, run_id: str, **env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(APP), "recover", url, str(workdir), run_id],
        env={**os.environ, "EXECUTOR_ID": "effects-b", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _crash_in_refund(
    url: str, workdir: Path, block_in: str, reconcile: str, key: str = "refund:B7"
) -> None:
    proc = _spawn(
        "refund", url, workdir, "crash", BLOCK_IN=block_in, RECONCILE=reconcile, LEASE="1"
    )
    _kill_when_blocked(proc, workdir)
    assert proc.returncode == -signal.SIGKILL
    assert query(url, "SELECT status FROM {p}steps WHERE run_id = 'crash' AND step_index = 3") == [
        ("STARTED",)
    ]
    assert [r[:5] for r in ledger(url)] == [(key, "crash", 3, "refund_order", "STARTED")]


@pytest.mark.slow
def test_killed_after_the_effect_reconcile_finds_it_and_nothing_runs_twice(
    database_url: str, tmp_path: Path
) -> None:
    _crash_in_refund(database_url, tmp_path, "refund_after", "yes")
    assert len(_lines(tmp_path / "payments.log")) == 1  # counted, then killed

    outcome = _recover(database_url, tmp_path, "crash", RECONCILE="yes")
    assert outcome["status"] == "SUCCEEDED", outcome
    assert outcome["output"]["output"] == "Order B7 is refunded."
    assert len(_lines(tmp_path / "payments.log")) == 1  # not executed again
    assert _lines(tmp_path / "calls.log") == [
        {"run_id": "crash", "step_index": 3, "key": "refund:B7", "attempt": 1}
    ]
    # The other executor asked with the same key the tool was given.
    assert _lines(tmp_path / "reconcile.log") == [{"key": "refund:B7", "run_id": "crash"}]
    result = {"refund_id": "re_refund:B7", "amount": 4990}
    assert [r[4:] for r in ledger(database_url)] == [("DONE", result)]
    rows = query(database_url, "SELECT status, output, owner FROM {p}runs WHERE run_id = 'crash'")
    assert rows[0][0] == "SUCCEEDED" and rows[0][2] is None
    steps = query(
        database_url,
        "SELECT status, idempotency_key FROM {p}steps WHERE run_id = 'crash' ORDER BY step_index",
    )
    assert steps == [
        ("SUCCEEDED", None),
        ("SUCCEEDED", "crash:1"),
        ("SUCCEEDED", None),
        ("SUCCEEDED", "refund:B7"),
        ("SUCCEEDED", None),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("reconcile", "key"), [("yes", "refund:B7"), ("keyless", "crash:3")])
def test_killed_before_the_effect_reconcile_says_no_and_the_tool_runs(
    database_url: str, tmp_path: Path, reconcile: str, key: str
) -> None:
    _crash_in_refund(database_url, tmp_path, "refund_before", reconcile, key=key)
    assert _lines(tmp_path / "payments.log") == []

    outcome = _recover(database_url, tmp_path, "crash", RECONCILE=reconcile)
    assert outcome["status"] == "SUCCEEDED", outcome
    assert [line["key"] for line in _lines(tmp_path / "payments.log")] == [key]
    # The same key in the killed process, in the other executor's reconcile and retry.
    assert [(c["key"], c["step_index"]) for c in _lines(tmp_path / "calls.log")] == [
        (key, 3),
        (key, 3),
    ]
    assert _lines(tmp_path / "reconcile.log") == [{"key": key, "run_id": "crash"}]
    assert [(r[0], r[4]) for r in ledger(database_url)] == [(key, "DONE")]


@pytest.mark.slow
def test_killed_inside_a_tool_without_reconcile_needs_attention_then_resolve(
    database_url: str, tmp_path: Path
) -> None:
    _crash_in_refund(database_url, tmp_path, "refund_after", "no")
    outcome = _recover(database_url, tmp_path, "crash", RECONCILE="no")
    assert outcome["status"] == "NEEDS_ATTENTION"
    assert outcome["error"] == {
        "type": "NeedsAttention",
        "message": "tool 'refund_order' started at step 3 but its outcome was never recorded "
        "(the process stopped during the call), and the tool has no reconcile hook to ask "
        "whether the effect happened",
        "step_index": 3,
        "tool": "refund_order",
    }
    assert len(_lines(tmp_path / "payments.log")) == 1  # never re-executed blindly

    # The operator checks the payments service and supplies the result.
    with agentdur.Runtime(database_url) as rt:
        rt.resolve("crash", 3, "result", {"refund_id": "re_refund:B7", "amount": 4990})
        assert rt.get_run("crash").status == "PENDING"
    outcome = _recover(database_url, tmp_path, "crash", RECONCILE="no")
    assert outcome["status"] == "SUCCEEDED"
    assert len(_lines(tmp_path / "payments.log")) == 1
    assert len(_lines(tmp_path / "calls.log")) == 1


@pytest.mark.slow
def test_a_raising_reconcile_hook_needs_attention_instead_of_failing_the_run(
    database_url: str, tmp_path: Path
) -> None:
    _crash_in_refund(database_url, tmp_path, "refund_after", "raise")
    outcome = _recover(database_url, tmp_path, "crash", RECONCILE="raise")
    assert outcome["status"] == "NEEDS_ATTENTION", outcome
    assert outcome["error"]["message"] == (
        "the reconcile hook of tool 'refund_order' (step 3) raised ConnectionError: payments "
        "service unreachable; resolve the step once you know whether the effect happened"
    )
    assert len(_lines(tmp_path / "payments.log")) == 1
    assert len(_lines(tmp_path / "reconcile.log")) == 1


# -- `agentdur resolve` ------------------------------------------------------------------------


def _cli(database_url: str, *argv: str) -> tuple[int, str]:
    """Parse `argv` with a parser holding only the operations, run the handler."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="agentdur")
    add_operation_parsers(parser.add_subparsers(required=True), common)
    args = parser.parse_args([*argv, "--database-url", database_url])
    out = io.StringIO()
    code: int = args.handler(args, out)
    return code, out.getvalue()


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`opsapp:rt`, an application module in the working directory (its URL is overridden
    by --database-url; the agents are registered in this process already)."""
    (tmp_path / "opsapp.py").write_text(
        "import agentdur\nrt = agentdur.Runtime('sqlite:///never-opened.db')\n"
    )
    monkeypatch.chdir(tmp_path)
    return "opsapp:rt"


def test_cli_resolve_records_the_decision_for_any_executor(
    rt: agentdur.Runtime, database_url: str
) -> None:
    _uncertain_run(rt, "cli-resolve", "c1")
    code, out = _cli(database_url, "resolve", "c1", "1", "--result", '{"refund_id": "re_cli"}')
    assert code == 0
    assert out.splitlines() == [
        'step 1 of run c1 recorded with the result {"refund_id": "re_cli"}',
        "run c1 is PENDING: any executor that recovers runs continues it (a worker, or "
        "Runtime(..., recover=True)); or give --app to continue it here",
    ]
    assert rt.get_run("c1").status == "PENDING"  # recorded only: nobody runs it yet
    assert [h.run_id for h in rt.recover()] == ["c1"]
    assert rt.handle("c1").result(timeout=30)["output"] == "done"
    assert rt.steps("c1")[1].output == {"refund_id": "re_cli"}
    assert len(CALLS) == 1


def test_cli_resolve_with_app_continues_the_run_here(
    rt: agentdur.Runtime, database_url: str, app_module: str
) -> None:
    _uncertain_run(rt, "cli-resolve-app", "c2")
    code, out = _cli(database_url, "resolve", "c2", "1", "--retry", "--app", app_module)
    assert code == 0, out
    assert out.splitlines() == [
        "step 1 of run c2 will be executed again (retry)",
        'run c2 SUCCEEDED: output {"output": "done", "usage": {"cache_read_tokens": 0, '
        '"cache_write_tokens": 0, "input_tokens": 0, "output_tokens": 0}}',
    ]
    assert rt.get_run("c2").status == "SUCCEEDED"
    assert len(CALLS) == 2


def test_cli_resolve_fail_with_app(
    rt: agentdur.Runtime, database_url: str, app_module: str
) -> None:
    _uncertain_run(rt, "cli-resolve-fail", "c3")
    code, out = _cli(
        database_url, "resolve", "c3", "1", "--fail", "bank says no", "--app", app_module
    )
    assert code == 0
    assert out.splitlines()[0] == "step 1 of run c3 recorded as failed: bank says no"
    assert rt.steps("c3")[1].error == {"type": "ResolvedAsFailed", "message": "bank says no"}


def test_cli_resolve_exits_1_when_the_run_needs_attention_again(
    rt: agentdur.Runtime, database_url: str, app_module: str
) -> None:
    _uncertain_run(rt, "cli-held", "c4-holder")
    other, _ = refund_agent("cli-held-2", refund_fmt)
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.start_agent(other, "refund A1", run_id="c4").result(timeout=30)
    code, out = _cli(database_url, "resolve", "c4", "1", "--retry", "--app", app_module)
    assert code == 1
    assert out.splitlines()[1] == (
        "run c4 NEEDS_ATTENTION at step 1: the effect key 'refund:A1' is held by run "
        "c4-holder step 1, whose outcome is not known"
    )


def test_cli_resolve_errors_are_one_line_exit_2(
    rt: agentdur.Runtime,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _uncertain_run(rt, "cli-errors", "c5")
    capsys.readouterr()
    cases = [
        (
            ("resolve", "c5", "0", "--retry"),
            "agentdur: error: step 0 of run 'c5' (NEEDS_ATTENTION) is not waiting for "
            "resolution (llm step, SUCCEEDED)",
        ),
        (
            ("resolve", "c5", "1", "--result", "refunded"),
            "agentdur: error: --result must be JSON (Expecting value at column 1); a text "
            "result is quoted: --result '\"refunded\"'",
        ),
        (
            ("resolve", "nope", "1", "--retry"),
            f"agentdur: error: no run with id 'nope' in {rt.database_url}; "
            "`agentdur runs list` shows its runs",
        ),
    ]
    for argv, message in cases:
        code, out = _cli(database_url, *argv)
        assert (code, out, capsys.readouterr().err) == (2, "", message + "\n")
    missing = tmp_path / "missing.db"
    code, _ = _cli(f"sqlite:///{missing}", "resolve", "c5", "1", "--retry")
    assert code == 2
    assert capsys.readouterr().err == (
        f"agentdur: error: no SQLite database at {missing}: check --database-url or "
        "AGENTDUR_DATABASE_URL\n"
    )
    assert not missing.exists()
    assert rt.get_run("c5").status == "NEEDS_ATTENTION"
    with pytest.raises(SystemExit):  # one of --retry, --result, --fail is required
        _cli(database_url, "resolve", "c5", "1")
