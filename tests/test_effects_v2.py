"""Effects that say what happened, on SQLite and PostgreSQL (issue 10, items 10 and 20-26).

Checked as in test_effects.py: the ledger and runs read with plain SQL, what the model was
told, and the outside world's own count of what it did.
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

import agentdur
from agentdur.cli_operations import add_operation_parsers
from agentdur.models import AssistantMessage, Message, ScriptInfo, ToolResultMessage
from agentdur.testing import Scripted
from tests.apps.effects_db import is_sqlite, ledger, query, sqlite_path

WORLD: list[dict[str, Any]] = []
"""What the outside world did: one entry per refund or email that really happened."""
PLAN: dict[str, list[BaseException | None]] = {}
"""order id -> what each successive refund call raises (None: succeed)."""
SEEN: list[dict[str, Any]] = []
"""What the tools and hooks were given: ToolContext fields."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    WORLD.clear()
    PLAN.clear()
    SEEN.clear()
    yield


def _refund(order_id: str, amount: int, ctx: agentdur.ToolContext) -> dict[str, Any]:
    """Refund an order."""
    SEEN.append({"step": ctx.step_index, "token": ctx.fencing_token, "args": ctx.arguments})
    planned = PLAN.get(order_id)
    if planned:
        failure = planned.pop(0)
        if failure is not None:
            raise failure
    WORLD.append({"refund": order_id, "amount": amount})
    return {"refund_id": f"re_{len(WORLD)}", "order_id": order_id, "amount": amount}


refund = agentdur.tool(effect="side_effect", key="refund:{order_id}", name="refund_order")(_refund)
refund_keyless = agentdur.tool(effect="side_effect", name="refund_order")(_refund)
refund_no_transport = agentdur.tool(
    effect="side_effect", key="refund:{order_id}", name="refund_order", uncertain_on=()
)(_refund)
refund_reconciled = agentdur.tool(
    effect="side_effect", key="refund:{order_id}", name="refund_order"
)(_refund)


@refund_reconciled.reconcile
def _find_refund(ctx: agentdur.ToolContext) -> dict[str, Any] | None:
    SEEN.append({"reconcile": ctx.idempotency_key, "args": ctx.arguments})
    order = ctx.arguments["order_id"]
    found = [w for w in WORLD if w.get("refund") == order]
    return {"refund_id": "re_found", "order_id": order} if found else None


class Script:
    """A Scripted function that answers by turn and keeps every request it was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = answers
        self.requests: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> Any:
        self.requests.append(messages)
        return self.answers[sum(isinstance(m, AssistantMessage) for m in messages)]

    def tool_results(self) -> list[tuple[str, bool]]:
        last = self.requests[-1]
        return [(m.content, m.is_error) for m in last if isinstance(m, ToolResultMessage)]


def refund_agent(
    name: str, tool: agentdur.Tool, *orders: tuple[str, int]
) -> tuple[agentdur.Agent, Script]:
    calls = [("refund_order", {"order_id": o, "amount": a}) for o, a in orders or [("A1", 500)]]
    script = Script(Scripted.tool_calls(calls), "done")
    return agentdur.Agent(name, Scripted(script), tools=[tool]), script


def _set_pending(url: str, run_id: str) -> None:
    """The state a crash leaves once the dead owner's lease has expired."""
    if is_sqlite(url):
        lite = sqlite3.connect(sqlite_path(url))
        lite.execute(
            "UPDATE runs SET status = 'PENDING', owner = NULL, error = NULL WHERE run_id = ?",
            (run_id,),
        )
        lite.commit()
        lite.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE agentdur.runs SET status = 'PENDING', owner = NULL, error = NULL "
            "WHERE run_id = %s",
            (run_id,),
        )


def _run_row(url: str, run_id: str) -> tuple[Any, ...]:
    rows = query(url, "SELECT status, epoch FROM {p}runs WHERE run_id = ?", (run_id,))
    return rows[0]


def _cli(database_url: str, *argv: str) -> tuple[int, str]:
    """Run an `agentdur` operation in-process against the database."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="agentdur")
    add_operation_parsers(parser.add_subparsers(required=True), common)
    args = parser.parse_args([*argv, "--database-url", database_url])
    out = io.StringIO()
    code: int = args.handler(args, out)
    return code, out.getvalue()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- 10: a dry-run fork executes only read_only tools -------------------------------------


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    WORLD.append({"lookup": order_id})
    return {"order_id": order_id, "status": "paid"}


@agentdur.tool(effect="idempotent")
def send_email(to: str, body: str, ctx: agentdur.ToolContext) -> str:
    """Send an email."""
    WORLD.append({"email": to, "dry_run": ctx.dry_run})
    return "sent"


@agentdur.tool(effect="idempotent")
def send_sms(to: str) -> str:
    """Send a text message."""
    WORLD.append({"sms": to})
    return "sent"


@send_sms.simulate
def _sms_simulated(to: str) -> dict[str, Any]:
    return {"simulated": True, "message": f"DRY RUN: no SMS to {to}"}


def test_a_dry_run_fork_executes_only_read_only_tools(
    rt: agentdur.Runtime, database_url: str
) -> None:
    calls = [
        ("lookup_order", {"order_id": "A1"}),
        ("send_email", {"to": "ann@example.com", "body": "refunded"}),
        ("send_sms", {"to": "+100"}),
        ("refund_order", {"order_id": "A1", "amount": 500}),
    ]
    script = Script(Scripted.tool_calls(calls), "done")
    tools = [lookup_order, send_email, send_sms, refund]
    agent = agentdur.Agent("dry", Scripted(script), tools=tools)
    rt.run_agent(agent, "go", run_id="live")
    assert len(WORLD) == 4
    WORLD.clear()

    fork = rt.fork("live", at_step=1, new_run_id="dry", dry_run=True)
    assert fork.result(timeout=30)["output"] == "done"
    assert WORLD == [{"lookup": "A1"}]  # only the read_only tool executed
    results = script.tool_results()
    assert results[0] == ('{"order_id":"A1","status":"paid"}', False)
    assert results[1] == (
        "DRY RUN: send_email was NOT executed and nothing happened in the outside world; this "
        "result is simulated. Do not tell the user it was done.",
        False,
    )
    assert results[2] == ("DRY RUN: no SMS to +100", False)
    assert results[3][0].startswith("DRY RUN: refund_order was NOT executed")
    flags = query(
        database_url,
        "SELECT step_index, dry_run FROM {p}steps WHERE run_id = 'dry' AND kind = 'tool' "
        "ORDER BY step_index",
    )
    assert [(i, bool(d)) for i, d in flags] == [(1, False), (2, True), (3, True), (4, True)]
    assert [row[1] for row in ledger(database_url)] == ["live"]  # the fork claimed no key


# -- 20: two calls with the same domain key in one turn -------------------------------------


def test_same_key_twice_in_one_turn_the_second_is_deduplicated(
    rt: agentdur.Runtime, database_url: str
) -> None:
    agent, script = refund_agent("twice", refund, ("A1", 500), ("A1", 500))
    assert rt.run_agent(agent, "refund A1", run_id="t1").output == "done"

    assert WORLD == [{"refund": "A1", "amount": 500}]
    first = {"refund_id": "re_1", "order_id": "A1", "amount": 500}
    assert script.tool_results() == [(_dumps(first), False), (_dumps(first), False)]
    steps = query(
        database_url,
        "SELECT status, deduplicated, idempotency_key FROM {p}steps "
        "WHERE run_id = 't1' AND kind = 'tool' ORDER BY step_index",
    )
    assert sorted((s, bool(d), k) for s, d, k in steps) == [
        ("SUCCEEDED", False, "refund:A1"),
        ("SUCCEEDED", True, "refund:A1"),
    ]
    assert [row[4:] for row in ledger(database_url)] == [("DONE", first)]
    assert rt.get_run("t1").status == "SUCCEEDED"


def test_same_key_twice_in_one_turn_the_second_executes_when_the_first_did_not_apply(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [agentdur.NotApplied("the card was declined"), None]
    agent, script = refund_agent("twice-refused", refund, ("A1", 500), ("A1", 500))
    assert rt.run_agent(agent, "refund A1", run_id="t2").output == "done"

    assert WORLD == [{"refund": "A1", "amount": 500}]
    applied = {"refund_id": "re_1", "order_id": "A1", "amount": 500}
    assert sorted(script.tool_results()) == sorted(
        [(_dumps(applied), False), ("the card was declined", True)]
    )
    rows = query(
        database_url,
        "SELECT status, deduplicated FROM {p}steps WHERE run_id = 't2' AND kind = 'tool'",
    )
    assert sorted((s, bool(d)) for s, d in rows) == [("ERROR", False), ("SUCCEEDED", False)]
    assert [row[4:] for row in ledger(database_url)] == [("DONE", applied)]


# -- 21: NotApplied ------------------------------------------------------------------------


def test_not_applied_releases_the_key_and_tells_the_model_exactly(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [agentdur.NotApplied("Error: order A1 is already cancelled")]
    agent, script = refund_agent("refused", refund)
    assert rt.run_agent(agent, "refund A1", run_id="n1").output == "done"

    assert WORLD == []
    assert script.tool_results() == [("Error: order A1 is already cancelled", True)]
    rows = query(
        database_url,
        "SELECT status, error, attempts FROM {p}steps WHERE run_id = 'n1' AND step_index = 1",
    )
    status, error, attempts = rows[0]
    error = json.loads(error) if isinstance(error, str) else error
    assert (status, error, attempts) == (
        "ERROR",
        {"type": "NotApplied", "message": "Error: order A1 is already cancelled"},
        1,
    )
    assert ledger(database_url) == []  # released
    (call,) = rt.audit.tool_calls("refund_order", run_id="n1")
    assert (call.status, call.error["type"], call.error["message"]) == (
        "ERROR",
        "NotApplied",
        "Error: order A1 is already cancelled",
    )
    # The replayed conversation tells the model the same text.
    replayed = rt.agent_result(agent, "n1", rt.handle("n1").result()).messages
    told = [m.content for m in replayed if isinstance(m, ToolResultMessage)]
    assert told == ["Error: order A1 is already cancelled"]

    # A corrected call under the same key executes.
    again, _ = refund_agent("refused-2", refund, ("A1", 300))
    rt.run_agent(again, "refund A1, 300", run_id="n2")
    assert WORLD == [{"refund": "A1", "amount": 300}]
    assert [row[:5] for row in ledger(database_url)] == [
        ("refund:A1", "n2", 1, "refund_order", "DONE")
    ]


def test_not_applied_is_never_retried_nor_raised(rt: agentdur.Runtime) -> None:
    attempts: list[int] = []

    @agentdur.tool(effect="idempotent", retries=3)
    def cancel_order(order_id: str, ctx: agentdur.ToolContext) -> str:
        """Cancel an order."""
        attempts.append(ctx.attempt)
        raise agentdur.NotApplied(f"order {order_id} has shipped; it cannot be cancelled")

    script = Script(Scripted.tool_call("cancel_order", {"order_id": "A9"}), "done")
    agent = agentdur.Agent(
        "refused-plain", Scripted(script), tools=[cancel_order], tool_errors="raise"
    )
    assert rt.run_agent(agent, "cancel A9", run_id="n3").output == "done"
    assert attempts == [1]
    assert script.tool_results() == [("order A9 has shipped; it cannot be cancelled", True)]
    assert rt.steps("n3")[1].error == {
        "type": "NotApplied",
        "message": "order A9 has shipped; it cannot be cancelled",
    }


# -- 22 and 24: transport errors are uncertain; reconcile gets the arguments ---------------


def _read_timeout() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("timed out", request=httpx.Request("POST", "https://bank.test"))


def test_a_read_timeout_after_sending_needs_attention(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [_read_timeout()]
    agent, _ = refund_agent("timeout", refund)
    with pytest.raises(agentdur.NeedsAttentionError) as caught:
        rt.start_agent(agent, "refund A1", run_id="x1").result(timeout=30)
    assert caught.value.step_index == 1
    assert rt.get_run("x1").error == {
        "type": "NeedsAttention",
        "message": "tool 'refund_order' cannot tell: ReadTimeout: timed out (raised after its "
        "request may have been sent)",
        "step_index": 1,
        "tool": "refund_order",
    }
    assert [row[4] for row in ledger(database_url)] == ["STARTED"]  # not released


def test_a_disconnect_wrapped_by_an_sdk_is_uncertain_too(rt: agentdur.Runtime) -> None:
    class APIConnectionError(Exception):  # what an SDK raises `from` the transport error
        pass

    try:
        try:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        except httpx.RemoteProtocolError as exc:
            raise APIConnectionError("Connection error.") from exc
    except APIConnectionError as wrapped:
        PLAN["A1"] = [wrapped]
    agent, _ = refund_agent("wrapped", refund)
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.start_agent(agent, "refund A1", run_id="x2").result(timeout=30)


def test_a_connect_error_counts_as_not_executed(rt: agentdur.Runtime, database_url: str) -> None:
    PLAN["A1"] = [httpx.ConnectError("connection refused"), None]
    agent, script = refund_agent("connect", refund)
    assert rt.run_agent(agent, "refund A1", run_id="x3").output == "done"
    assert script.tool_results() == [("Error: ConnectError: connection refused", True)]
    assert ledger(database_url) == []


def test_a_tool_can_declare_transport_errors_certain(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [_read_timeout()]
    agent, script = refund_agent("declared", refund_no_transport)
    assert rt.run_agent(agent, "refund A1", run_id="x4").output == "done"
    assert script.tool_results() == [("Error: ReadTimeout: timed out", True)]
    assert ledger(database_url) == []


@pytest.mark.parametrize("happened", [True, False])
def test_reconcile_settles_an_uncertain_call_with_its_arguments(
    rt: agentdur.Runtime, database_url: str, happened: bool
) -> None:
    if happened:  # the bank refunded, then the answer was lost
        WORLD.append({"refund": "A1", "amount": 500})
    PLAN["A1"] = [_read_timeout()]
    agent, script = refund_agent(f"reconciled-{happened}", refund_reconciled)
    assert rt.run_agent(agent, "refund A1", run_id="x5").output == "done"

    assert SEEN[-1] == {"reconcile": "refund:A1", "args": {"order_id": "A1", "amount": 500}}
    if happened:
        found = {"refund_id": "re_found", "order_id": "A1"}
        assert script.tool_results() == [(_dumps(found), False)]
        assert [row[4:] for row in ledger(database_url)] == [("DONE", found)]
    else:
        assert script.tool_results() == [("Error: ReadTimeout: timed out", True)]
        assert ledger(database_url) == []
    assert len(WORLD) == (1 if happened else 0)


# -- 23: several unsettled side effects --------------------------------------------------------


def test_every_unsettled_step_is_named_and_the_run_resumes_once_all_are_resolved(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [agentdur.UncertainEffect("bank timeout")]
    PLAN["A2"] = [agentdur.UncertainEffect("bank timeout"), None]
    agent, script = refund_agent("several", refund, ("A1", 1), ("A2", 2))
    with pytest.raises(agentdur.NeedsAttentionError) as caught:
        rt.start_agent(agent, "refund both", run_id="m1").result(timeout=30)
    assert [s["step_index"] for s in caught.value.steps] == [1, 2]

    # As after a crash in both calls: recovery finds both STARTED and names both.
    _set_pending(database_url, "m1")
    [handle] = rt.recover()
    with pytest.raises(agentdur.NeedsAttentionError) as caught:
        handle.result(timeout=30)
    reason = (
        "tool 'refund_order' started at step {} but its outcome was never recorded (the "
        "process stopped during the call), and the tool has no reconcile hook to ask whether "
        "the effect happened"
    )
    expected_steps = [
        {"step_index": 1, "tool": "refund_order", "message": reason.format(1)},
        {"step_index": 2, "tool": "refund_order", "message": reason.format(2)},
    ]
    assert rt.get_run("m1").error == {
        "type": "NeedsAttention",
        "step_index": 1,
        "tool": "refund_order",
        "message": f"2 tool calls need attention: step 1: {reason.format(1)}; "
        f"step 2: {reason.format(2)}",
        "steps": expected_steps,
    }
    assert caught.value.steps == expected_steps
    assert str(caught.value).startswith("run 'm1' needs attention at steps 1, 2 (step 1: ")
    assert [row[4] for row in ledger(database_url)] == ["STARTED", "STARTED"]

    code, out = _cli(database_url, "resolve", "m1", "1", "--result", '{"refund_id": "re_bank"}')
    assert (code, out.splitlines()) == (
        0,
        [
            'step 1 of run m1 recorded with the result {"refund_id": "re_bank"}',
            "run m1 is still NEEDS_ATTENTION: resolve step 2 too; it continues once every "
            "step is resolved",
        ],
    )
    assert _run_row(database_url, "m1")[0] == "NEEDS_ATTENTION"  # step 2 is still open
    rt.resolve("m1", 2, "retry")
    assert rt.handle("m1").result(timeout=30)["output"] == "done"
    assert WORLD == [{"refund": "A2", "amount": 2}]
    assert script.tool_results() == [
        ('{"refund_id":"re_bank"}', False),
        (_dumps({"refund_id": "re_1", "order_id": "A2", "amount": 2}), False),
    ]
    assert [row[4] for row in ledger(database_url)] == ["DONE", "DONE"]


# -- 25: the fencing token ------------------------------------------------------------------


def test_the_fencing_token_is_the_runs_epoch_and_grows_with_each_takeover(
    rt: agentdur.Runtime, database_url: str
) -> None:
    PLAN["A1"] = [agentdur.UncertainEffect("bank timeout"), None]
    agent, _ = refund_agent("fenced", refund_keyless)
    with pytest.raises(agentdur.NeedsAttentionError):
        rt.start_agent(agent, "refund A1", run_id="f1").result(timeout=30)
    first = SEEN[0]["token"]
    assert first == _run_row(database_url, "f1")[1]
    rt.resolve("f1", 1, "retry")  # another claim of the run: a new epoch
    rt.handle("f1").result(timeout=30)
    second = SEEN[1]["token"]
    assert second > first
    assert second == _run_row(database_url, "f1")[1]


# -- 26: key scopes ----------------------------------------------------------------------------


def test_a_key_scope_keeps_domain_keys_apart(rt: agentdur.Runtime, database_url: str) -> None:
    for run_id, scope in [("s1", "tenant-1"), ("s2", "tenant-2"), ("s3", "tenant-1")]:
        agent, _ = refund_agent(f"scoped-{run_id}", refund)
        rt.run_agent(agent, "refund A1", run_id=run_id, key_scope=scope)
    assert len(WORLD) == 2  # one refund per tenant; s3 was deduplicated
    assert [(row[0], row[1]) for row in ledger(database_url)] == [
        ("tenant-1/refund:A1", "s1"),
        ("tenant-2/refund:A1", "s2"),
    ]
    assert rt.steps("s3")[1].deduplicated is True
    assert rt.steps("s3")[1].idempotency_key == "tenant-1/refund:A1"

    # A fork keeps its source's scope, so it is deduplicated in that scope.
    fork = rt.fork("s2", at_step=1, new_run_id="s2-fork")
    assert fork.result(timeout=30)["output"] == "done"
    assert rt.steps("s2-fork")[1].deduplicated is True
    assert len(WORLD) == 2

    # Without a scope, the key is the plain domain key.
    agent, _ = refund_agent("unscoped", refund)
    rt.run_agent(agent, "refund A1", run_id="s4")
    assert len(WORLD) == 3
    assert ledger(database_url)[0][0] == "refund:A1"


def test_a_key_scope_must_be_a_non_empty_string(rt: agentdur.Runtime) -> None:
    agent, _ = refund_agent("scope-errors", refund)
    with pytest.raises(agentdur.UsageError) as caught:
        rt.run_agent(agent, "refund A1", key_scope="")
    assert str(caught.value) == "key_scope must be a non-empty str, got ''"
