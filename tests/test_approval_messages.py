"""Human approval of tool calls and durable messages (recv/send), on SQLite and PostgreSQL.

A waiting run holds no thread and no owner: it is recorded WAITING, whoever delivers the
decision or the message makes it runnable, and any executor continues it. The subprocess
tests start a run in one process that exits, decide in this one, and finish in a third.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import agentdur
from agentdur.cli_operations import add_operation_parsers
from agentdur.models import AssistantMessage, Message, ScriptInfo, ToolResultMessage
from agentdur.testing import Scripted
from tests.apps.effects_db import ledger, messages
from tests.helpers import wait_for

APP = Path(__file__).parent / "apps" / "effects_app.py"
EXECUTED: list[tuple[str, int, dict[str, Any]]] = []
"""(run_id, step_index, arguments) of every refund that really ran."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    EXECUTED.clear()
    yield


def _refund(order_id: str, amount: int, ctx: agentdur.ToolContext) -> dict[str, Any]:
    """Refund an order."""
    if amount < 100:
        time.sleep(0.3)  # small refunds are slow: still running when a sibling waits
    EXECUTED.append((ctx.run_id, ctx.step_index, {"order_id": order_id, "amount": amount}))
    return {"refunded": amount, "order_id": order_id}


refund_gated = agentdur.tool(effect="side_effect", requires_approval=True, name="refund_order")(
    _refund
)
refund_keyed_gated = agentdur.tool(
    effect="side_effect", requires_approval=True, key="refund:{order_id}", name="refund_order"
)(_refund)
refund_plain = agentdur.tool(effect="side_effect", name="refund_order")(_refund)


def _large(call: Any) -> bool:
    return bool(call.name == "refund_order" and call.arguments["amount"] > 100)


class Script:
    """Answers by turn; keeps every request."""

    def __init__(self, *answers: Any) -> None:
        self.answers = answers
        self.requests: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> Any:
        self.requests.append(messages)
        return self.answers[sum(isinstance(m, AssistantMessage) for m in messages)]

    def tool_results(self) -> list[tuple[str, bool]]:
        last = self.requests[-1]
        return [(m.content, m.is_error) for m in last if isinstance(m, ToolResultMessage)]


def _agent(name: str, tool: agentdur.Tool, *calls: tuple[str, int], **options: Any) -> Any:
    first = Scripted.tool_calls(
        [("refund_order", {"order_id": order, "amount": amount}) for order, amount in calls]
    )
    script = Script(first, "done")
    return agentdur.Agent(name, Scripted(script), tools=[tool], **options), script


def _waiting(rt: agentdur.Runtime, run_id: str) -> None:
    wait_for(lambda: rt.get_run(run_id).status == "WAITING", timeout=30, what="WAITING")


def _steps(rt: agentdur.Runtime, run_id: str) -> list[tuple[int, str, str, str]]:
    return [(s.step_index, s.kind, s.name, s.status) for s in rt.steps(run_id)]


# -- approval -------------------------------------------------------------------------------


def test_requires_approval_records_the_call_waiting_then_runs_it(
    rt: agentdur.Runtime, database_url: str
) -> None:
    agent, script = _agent("approve-basic", refund_gated, ("A1", 500))
    handle = rt.start_agent(agent, "refund A1", run_id="ap1")
    _waiting(rt, "ap1")

    run = rt.get_run("ap1")
    assert (run.owner, run.lease_until) == (None, None)  # no executor holds it
    assert _steps(rt, "ap1") == [
        (0, "llm", "scripted", "SUCCEEDED"),
        (1, "tool", "refund_order", "WAITING"),
    ]
    step = rt.steps("ap1")[1]
    assert step.input["arguments"] == {"order_id": "A1", "amount": 500}
    calls = rt.audit.tool_calls(run_id="ap1")
    assert [(c.tool, c.arguments, c.status) for c in calls] == [
        ("refund_order", {"order_id": "A1", "amount": 500}, "WAITING")
    ]
    assert EXECUTED == []
    assert rt.recover() == []  # waiting for a human: nothing to recover

    rt.approve("ap1", 1)
    assert handle.result(timeout=30)["output"] == "done"
    assert EXECUTED == [("ap1", 1, {"order_id": "A1", "amount": 500})]
    assert rt.steps("ap1")[1].status == "SUCCEEDED"
    assert script.tool_results() == [('{"order_id":"A1","refunded":500}', False)]
    assert messages(database_url, "ap1") == [
        (1, "approval:1", {"approved": True, "note": None}, False)
    ]


def test_denial_goes_back_to_the_model_with_the_note(rt: agentdur.Runtime) -> None:
    agent, script = _agent("approve-deny", refund_gated, ("A1", 500))
    handle = rt.start_agent(agent, "refund A1", run_id="ap2")
    _waiting(rt, "ap2")
    rt.approve("ap2", 1, approved=False, note="over the limit for this customer")
    assert handle.result(timeout=30)["output"] == "done"

    assert EXECUTED == []
    step = rt.steps("ap2")[1]
    assert step.status == "ERROR"
    assert step.error == {
        "type": "ApprovalDenied",
        "message": "a human reviewer denied this call: over the limit for this customer",
    }
    assert script.tool_results() == [
        (
            "Error: ApprovalDenied: a human reviewer denied this call: over the limit for "
            "this customer",
            True,
        )
    ]


def test_denial_without_a_note(rt: agentdur.Runtime) -> None:
    agent, script = _agent("approve-deny-bare", refund_gated, ("A1", 500))
    handle = rt.start_agent(agent, "refund A1", run_id="ap3")
    _waiting(rt, "ap3")
    rt.approve("ap3", 1, approved=False)
    handle.result(timeout=30)
    assert script.tool_results() == [
        ("Error: ApprovalDenied: a human reviewer denied this call", True)
    ]


def test_agent_approve_predicate_gates_only_the_calls_it_names(rt: agentdur.Runtime) -> None:
    # One turn asks for two refunds: 50 runs at once (and is still running when the
    # other call starts waiting), 500 waits for a reviewer.
    agent, _ = _agent("approve-predicate", refund_plain, ("A1", 50), ("A2", 500), approve=_large)
    handle = rt.start_agent(agent, "refund both", run_id="ap4")
    _waiting(rt, "ap4")
    assert _steps(rt, "ap4") == [
        (0, "llm", "scripted", "SUCCEEDED"),
        (1, "tool", "refund_order", "SUCCEEDED"),
        (2, "tool", "refund_order", "WAITING"),
    ]
    assert EXECUTED == [("ap4", 1, {"order_id": "A1", "amount": 50})]
    rt.approve("ap4", 2)
    assert handle.result(timeout=30)["output"] == "done"
    assert sorted(e[1] for e in EXECUTED) == [1, 2]
    assert rt.get_run("ap4").status == "SUCCEEDED"


def test_two_calls_waiting_in_one_turn_are_both_recorded(rt: agentdur.Runtime) -> None:
    agent, _ = _agent("approve-two", refund_gated, ("A1", 200), ("A2", 300))
    handle = rt.start_agent(agent, "refund both", run_id="ap5")
    _waiting(rt, "ap5")
    assert _steps(rt, "ap5")[1:] == [
        (1, "tool", "refund_order", "WAITING"),
        (2, "tool", "refund_order", "WAITING"),
    ]
    rt.approve("ap5", 2)  # the run wakes, runs call 2 and waits again for call 1
    wait_for(lambda: len(EXECUTED) == 1, timeout=30, what="call 2")
    _waiting(rt, "ap5")
    assert EXECUTED == [("ap5", 2, {"order_id": "A2", "amount": 300})]
    rt.approve("ap5", 1, approved=False, note="no")
    assert handle.result(timeout=30)["output"] == "done"
    assert [s.status for s in rt.steps("ap5")[1:3]] == ["ERROR", "SUCCEEDED"]
    assert len(EXECUTED) == 1


def test_approval_of_a_keyed_side_effect_keeps_the_key_and_deduplicates(
    rt: agentdur.Runtime, database_url: str
) -> None:
    agent, _ = _agent("approve-keyed", refund_keyed_gated, ("A1", 500))
    first = rt.start_agent(agent, "refund A1", run_id="k1")
    _waiting(rt, "k1")
    assert rt.steps("k1")[1].idempotency_key == "refund:A1"  # the key it will claim
    rt.approve("k1", 1)
    first.result(timeout=30)

    again, _ = _agent("approve-keyed-2", refund_keyed_gated, ("A1", 500))
    second = rt.start_agent(again, "refund A1 again", run_id="k2")
    _waiting(rt, "k2")
    rt.approve("k2", 1)
    second.result(timeout=30)

    assert len(EXECUTED) == 1
    step = rt.steps("k2")[1]
    assert (step.status, step.deduplicated, step.idempotency_key) == (
        "SUCCEEDED",
        True,
        "refund:A1",
    )
    assert step.output == rt.steps("k1")[1].output
    flags = {c.run_id: (c.idempotency_key, c.deduplicated) for c in rt.audit.tool_calls()}
    assert flags == {"k1": ("refund:A1", False), "k2": ("refund:A1", True)}
    assert [row[:5] for row in ledger(database_url)] == [
        ("refund:A1", "k1", 1, "refund_order", "DONE")
    ]


def test_a_dry_run_fork_simulates_a_gated_call_without_asking(rt: agentdur.Runtime) -> None:
    agent, _ = _agent("approve-dry", refund_gated, ("A1", 500))
    handle = rt.start_agent(agent, "refund A1", run_id="d1")
    _waiting(rt, "d1")
    rt.approve("d1", 1)
    handle.result(timeout=30)
    fork = rt.fork("d1", at_step=1, new_run_id="d1-dry", dry_run=True)
    assert fork.result(timeout=30)["output"] == "done"
    step = rt.steps("d1-dry")[1]
    assert (step.status, step.dry_run, step.output["simulated"]) == ("SUCCEEDED", True, True)
    assert [c.dry_run for c in rt.audit.tool_calls(run_id="d1-dry")] == [True]
    assert len(EXECUTED) == 1


def test_approve_errors_name_what_is_wrong(rt: agentdur.Runtime) -> None:
    agent, _ = _agent("approve-errors", refund_gated, ("A1", 500))
    handle = rt.start_agent(agent, "refund A1", run_id="ae")
    _waiting(rt, "ae")
    with pytest.raises(agentdur.UsageError) as caught:
        rt.approve("ae", 0)
    assert str(caught.value) == (
        "step 0 of run 'ae' (WAITING) is not waiting for approval (llm step, SUCCEEDED)"
    )
    with pytest.raises(agentdur.UsageError) as caught:
        rt.approve("ae", 5)
    assert (
        str(caught.value)
        == "step 5 of run 'ae' (WAITING) is not waiting for approval (not recorded)"
    )
    with pytest.raises(agentdur.RunNotFoundError) as missing:
        rt.approve("nope", 1)
    assert str(missing.value) == "no run with id 'nope' (`agentdur runs list` shows the runs)"
    rt.approve("ae", 1)
    handle.result(timeout=30)
    with pytest.raises(agentdur.UsageError) as caught:
        rt.approve("ae", 1)
    assert str(caught.value) == (
        "step 1 of run 'ae' (SUCCEEDED) is not waiting for approval (tool step, SUCCEEDED)"
    )


# -- `agentdur approve` ------------------------------------------------------------------------


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
    (tmp_path / "approveapp.py").write_text(
        "import agentdur\nrt = agentdur.Runtime('sqlite:///never-opened.db')\n"
    )
    monkeypatch.chdir(tmp_path)
    return "approveapp:rt"


def test_cli_approve_with_app_continues_the_run_here(
    rt: agentdur.Runtime, database_url: str, app_module: str
) -> None:
    agent, _ = _agent("cli-approve", refund_gated, ("A1", 500))
    rt.start_agent(agent, "refund A1", run_id="ca1")
    _waiting(rt, "ca1")
    code, out = _cli(database_url, "approve", "ca1", "1", "--note", "ok", "--app", app_module)
    assert code == 0, out
    assert out.splitlines() == [
        "step 1 of run ca1 approved (note: ok)",
        'run ca1 SUCCEEDED: output {"output": "done", "usage": {"cache_read_tokens": 0, '
        '"cache_write_tokens": 0, "input_tokens": 0, "output_tokens": 0}}',
    ]
    assert EXECUTED == [("ca1", 1, {"order_id": "A1", "amount": 500})]


def test_cli_deny_records_it_for_any_executor(rt: agentdur.Runtime, database_url: str) -> None:
    agent, script = _agent("cli-deny", refund_gated, ("A1", 500))
    rt.start_agent(agent, "refund A1", run_id="ca2")
    _waiting(rt, "ca2")
    code, out = _cli(database_url, "approve", "ca2", "1", "--deny", "--note", "too much")
    assert code == 0
    assert out.splitlines() == [
        "step 1 of run ca2 denied (note: too much)",
        "run ca2 is PENDING: any executor that recovers runs continues it (a worker, or "
        "Runtime(..., recover=True)); or give --app to continue it here",
    ]
    assert rt.get_run("ca2").status == "PENDING"
    rt.recover()
    assert rt.handle("ca2").result(timeout=30)["output"] == "done"
    assert script.tool_results() == [
        ("Error: ApprovalDenied: a human reviewer denied this call: too much", True)
    ]
    assert EXECUTED == []


def test_cli_approve_reports_a_run_that_waits_again(
    rt: agentdur.Runtime, database_url: str, app_module: str
) -> None:
    agent, _ = _agent("cli-approve-two", refund_gated, ("A1", 200), ("A2", 300))
    rt.start_agent(agent, "refund both", run_id="ca3")
    _waiting(rt, "ca3")
    code, out = _cli(database_url, "approve", "ca3", "2", "--app", app_module)
    assert code == 0
    assert out.splitlines() == [
        "step 2 of run ca3 approved",
        "run ca3 is WAITING again (for an approval, a message or a timer)",
    ]
    assert EXECUTED == [("ca3", 2, {"order_id": "A2", "amount": 300})]


def test_cli_approve_errors_are_one_line_exit_2(
    rt: agentdur.Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, _ = _agent("cli-approve-errors", refund_gated, ("A1", 500))
    rt.start_agent(agent, "refund A1", run_id="ca4")
    _waiting(rt, "ca4")
    capsys.readouterr()
    code, out = _cli(database_url, "approve", "ca4", "0")
    assert (code, out) == (2, "")
    assert capsys.readouterr().err == (
        "agentdur: error: step 0 of run 'ca4' (WAITING) is not waiting for approval "
        "(llm step, SUCCEEDED)\n"
    )
    code, _ = _cli(database_url, "approve", "ca4", "1", "--app", "no_such_module_here:rt")
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "agentdur: error: cannot import 'no_such_module_here' for --app: ModuleNotFoundError"
    )
    with pytest.raises(SystemExit):
        _cli(database_url, "approve", "ca4", "-1")
    assert rt.get_run("ca4").status == "WAITING"


# -- approval across processes ---------------------------------------------------------------


def _app(mode: str, url: str, workdir: Path, run_id: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, str(APP), mode, url, str(workdir), run_id],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["runtime", "cli"])
def test_approval_across_three_processes(
    database_url: str,
    tmp_path: Path,
    how: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = _app("approval", database_url, tmp_path, "ap-x", EXECUTOR_ID="starter")
    assert json.loads(started) == [
        [0, "llm", "scripted", "SUCCEEDED"],
        [1, "tool", "lookup_order", "SUCCEEDED"],
        [2, "llm", "scripted", "SUCCEEDED"],
        [3, "tool", "refund_order", "WAITING"],
    ]
    # The process exited; the run waits in the database with no owner.
    with agentdur.Runtime(database_url, executor_id="reviewer") as rt:
        run = rt.get_run("ap-x")
        assert (run.status, run.owner) == ("WAITING", None)
        assert rt.recover() == []  # this process does not know the agent
        if how == "runtime":
            rt.approve("ap-x", 3, note="checked the photos")
        else:
            app = request.getfixturevalue("app_module")  # knows nothing of the agent
            code, out = _cli(database_url, "approve", "ap-x", "3", "--app", app)
            assert (code, out) == (2, "")
            assert capsys.readouterr().err == (
                f"agentdur: error: --app {app} does not define workflow "
                "'agent:effects-approval' of run ap-x: import the module that defines it, or "
                "leave out --app to record the decision for any executor\n"
            )
            assert rt.get_run("ap-x").status == "WAITING"  # nothing recorded
            code, out = _cli(database_url, "approve", "ap-x", "3", "--note", "checked the photos")
            assert (code, out.splitlines()[0]) == (
                0,
                "step 3 of run ap-x approved (note: checked the photos)",
            )
        assert rt.get_run("ap-x").status == "PENDING"  # runnable by any executor
    assert not (tmp_path / "calls.log").exists()

    finished = json.loads(_app("recover", database_url, tmp_path, "ap-x", EXECUTOR_ID="third"))
    assert finished["status"] == "SUCCEEDED"
    assert finished["output"]["output"] == "Order B7 is refunded."
    calls = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert calls == [{"run_id": "ap-x", "step_index": 3, "key": "refund:B7", "attempt": 1}]
    assert [r[:5] for r in ledger(database_url)] == [
        ("refund:B7", "ap-x", 3, "refund_order", "DONE")
    ]


@pytest.mark.slow
def test_send_across_three_processes(database_url: str, tmp_path: Path) -> None:
    started = _app("inbox", database_url, tmp_path, "in-x")
    assert json.loads(started) == [[0, "recv", "orders", "WAITING"]]
    with agentdur.Runtime(database_url, executor_id="sender") as rt:
        rt.send("in-x", "orders", {"order": 1})
        rt.send("in-x", "orders", {"order": 2})
        rt.send("in-x", "orders", {"order": 3})
        assert rt.get_run("in-x").status == "PENDING"
    finished = json.loads(_app("recover", database_url, tmp_path, "in-x", EXECUTOR_ID="third"))
    assert finished["status"] == "SUCCEEDED"
    assert finished["output"] == [{"order": 1}, {"order": 2}]
    assert [(m[1], m[2], m[3]) for m in messages(database_url, "in-x")] == [
        ("orders", {"order": 1}, True),
        ("orders", {"order": 2}, True),
        ("orders", {"order": 3}, False),  # never asked for: not consumed
    ]


# -- recv and send --------------------------------------------------------------------------


@agentdur.workflow(name="msgs.collect")
async def collect(count: int) -> list[Any]:
    return [await agentdur.recv("orders") for _ in range(count)]


COLLECT_GATE = threading.Event()


@agentdur.step
async def collect_gate() -> None:
    await asyncio.to_thread(COLLECT_GATE.wait, 30)


@agentdur.workflow(name="msgs.collect_gated")
async def collect_gated(count: int) -> list[Any]:
    first = await agentdur.recv("orders")
    await collect_gate()  # holds the run while the test sends the rest
    return [first] + [await agentdur.recv("orders") for _ in range(count - 1)]


@agentdur.workflow(name="msgs.two_topics")
async def two_topics() -> dict[str, Any]:
    cancel = await agentdur.recv("cancel")
    order = await agentdur.recv("orders")
    return {"cancel": cancel, "order": order}


@agentdur.workflow(name="msgs.with_timeout")
async def with_timeout(seconds: float) -> dict[str, Any]:
    reply = await agentdur.recv("reply", timeout=seconds)
    return {"reply": reply}


def test_messages_are_consumed_once_in_order(rt: agentdur.Runtime, database_url: str) -> None:
    COLLECT_GATE.clear()
    handle = rt.start(collect_gated, 3, run_id="m1")
    _waiting(rt, "m1")
    assert _steps(rt, "m1") == [(0, "recv", "orders", "WAITING")]
    rt.send("m1", "orders", "a")  # wakes the run, which then holds at its gate step
    wait_for(lambda: _steps(rt, "m1")[:1] == [(0, "recv", "orders", "SUCCEEDED")], what="a")
    # Sent while the run holds: a message to a finished run would be refused, so the run
    # must not be able to finish before the fourth one is stored.
    for value in ("b", "c", "d"):
        rt.send("m1", "orders", value)
    COLLECT_GATE.set()
    assert handle.result(timeout=30) == ["a", "b", "c"]
    assert [(s.step_index, s.status, s.output) for s in rt.steps("m1")] == [
        (0, "SUCCEEDED", "a"),
        (1, "SUCCEEDED", None),
        (2, "SUCCEEDED", "b"),
        (3, "SUCCEEDED", "c"),
    ]
    assert [(m[2], m[3]) for m in messages(database_url, "m1")] == [
        ("a", True),
        ("b", True),
        ("c", True),
        ("d", False),
    ]
    assert rt.replay("m1") == ["a", "b", "c"]  # replay consumes nothing
    assert messages(database_url, "m1")[3][3] is False


def test_messages_sent_before_recv_wait_for_it(rt: agentdur.Runtime) -> None:
    handle = rt.start(two_topics, run_id="m2")
    _waiting(rt, "m2")
    rt.send("m2", "orders", {"id": 7})  # wakes the run, which goes back to waiting
    wait_for(lambda: rt.get_run("m2").status == "WAITING", timeout=30, what="WAITING again")
    assert _steps(rt, "m2") == [(0, "recv", "cancel", "WAITING")]
    rt.send("m2", "cancel", False)
    assert handle.result(timeout=30) == {"cancel": False, "order": {"id": 7}}


def test_send_errors(rt: agentdur.Runtime) -> None:
    with pytest.raises(agentdur.RunNotFoundError):
        rt.send("nope", "orders", 1)
    handle = rt.start(collect, 0, run_id="m3")
    assert handle.result(timeout=30) == []
    with pytest.raises(agentdur.UsageError) as caught:
        rt.send("m3", "orders", 1)
    assert str(caught.value) == "run 'm3' is SUCCEEDED: it receives no more messages"
    with pytest.raises(agentdur.SerializationError):
        rt.send("m3", "orders", object())


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[agentdur.Runtime, Clock]]:
    clock = Clock()
    with agentdur.Runtime(database_url, executor_id="clocked", clock=clock) as rt:
        yield rt, clock


def test_recv_timeout_wakes_the_run_with_none_once_the_deadline_passed(
    clocked: tuple[agentdur.Runtime, Clock],
) -> None:
    rt, clock = clocked
    start = clock()
    handle = rt.start(with_timeout, 60.0, run_id="t1")
    _waiting(rt, "t1")
    assert rt.get_run("t1").lease_until == start + timedelta(seconds=60)  # its wake-up time

    clock.advance(59)
    assert rt.recover() == []
    assert rt.get_run("t1").status == "WAITING"

    clock.advance(2)
    assert [h.run_id for h in rt.recover()] == ["t1"]
    assert handle.result(timeout=30) == {"reply": None}
    step = rt.steps("t1")[0]
    assert (step.status, step.output, step.started_at) == ("SUCCEEDED", None, start)
    assert step.input == {
        "topic": "reply",
        "timeout": 60.0,
        "until": (start + timedelta(seconds=60)).isoformat(),
    }


def test_a_message_before_the_deadline_wins(clocked: tuple[agentdur.Runtime, Clock]) -> None:
    rt, clock = clocked
    handle = rt.start(with_timeout, 60.0, run_id="t2")
    _waiting(rt, "t2")
    clock.advance(30)
    rt.send("t2", "reply", "yes")
    assert handle.result(timeout=30) == {"reply": "yes"}
    clock.advance(3600)
    assert rt.recover() == []
    assert rt.steps("t2")[0].output == "yes"


def test_a_timed_out_recv_is_replayed_as_none(clocked: tuple[agentdur.Runtime, Clock]) -> None:
    rt, clock = clocked
    handle = rt.start(with_timeout, 5.0, run_id="t3")
    _waiting(rt, "t3")
    clock.advance(10)
    rt.recover()
    assert handle.result(timeout=30) == {"reply": None}
    assert rt.replay("t3") == {"reply": None}
