"""Replay and fork (DESIGN.md semantics 6 and 7) on SQLite and PostgreSQL.

Replay is checked against an agent on the real OpenAI SDK whose HTTP goes through a
respx router: after recording, the route is replaced by one that fails every request,
and the replay must still return the recorded output without calling it, run no tool
body, and leave the database byte-for-byte as it was. Fork is checked with the Scripted
model: what is copied, what runs again, edited responses, model switches, dry runs,
forks of forks, bad arguments, and recovery of an interrupted fork.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from typing import Any

import httpx
import psycopg
import pytest
import respx

import agentdur
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    OpenAIChat,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentdur.recording import response_of
from agentdur.testing import Scripted, ScriptInfo, openai_client
from tests.helpers import wait_for

CHAT_URL = "https://api.openai.com/v1/chat/completions"
PROMPT = "Order A17 arrived broken. Please refund it."
FINAL_TEXT = "I refunded order A17 (49.90 EUR)."
INSTRUCTIONS = "You are a support agent. Look orders up before refunding them."

COUNTS: dict[str, int] = {}
BLOCK = {"on": False}
ENTERED = threading.Event()
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    COUNTS.clear()
    BLOCK["on"] = False
    ENTERED.clear()
    GATE.clear()


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@agentdur.tool(effect="read_only")
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id."""
    _count("lookup_order")
    return {"order_id": order_id, "status": "delivered", "total": 49.9}


@agentdur.tool(effect="side_effect")
def refund_order(order_id: str, amount: float) -> dict[str, Any]:
    """Refund an order."""
    _count("refund_order")
    return {"refund_id": f"re_{order_id}", "amount": amount}


@agentdur.tool(effect="side_effect")
def email_customer(order_id: str, text: str) -> str:
    """Email the customer about an order."""
    _count("email_customer")
    return f"emailed {order_id}"


@email_customer.simulate
def _email_simulated(order_id: str, text: str) -> str:
    return f"(simulated) would email {order_id}: {text}"


# -- database dumps --------------------------------------------------------------------


def table_dump(database_url: str) -> dict[str, list[Any]]:
    """Every row of runs, steps and effects, in key order, as the database holds them."""
    queries = {
        "runs": "SELECT * FROM {}runs ORDER BY run_id",
        "steps": "SELECT * FROM {}steps ORDER BY run_id, step_index",
        "effects": "SELECT * FROM {}effects ORDER BY idempotency_key",
    }
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url[len("sqlite:///") :])
        try:
            return {t: conn.execute(q.format("")).fetchall() for t, q in queries.items()}
        finally:
            conn.close()
    with psycopg.connect(database_url) as pg:
        return {t: pg.execute(q.format("agentdur.")).fetchall() for t, q in queries.items()}  # type: ignore[arg-type]


def row_counts(database_url: str) -> dict[str, int]:
    return {table: len(rows) for table, rows in table_dump(database_url).items()}


# -- an agent on the real OpenAI SDK, answered by a respx router ------------------------


def completion(turn: int, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-replay{turn}",
        "object": "chat.completion",
        "created": 1747163251 + turn,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 92, "completion_tokens": 17, "total_tokens": 109},
    }


def chat_tool_call(turn: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {
        "id": f"call_replay{turn}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return completion(turn, {"content": None, "tool_calls": [call]}, "tool_calls")


ANSWERS = {
    0: chat_tool_call(0, "lookup_order", {"order_id": "A17"}),
    1: chat_tool_call(1, "refund_order", {"order_id": "A17", "amount": 49.9}),
    2: completion(2, {"content": FINAL_TEXT}, "stop"),
}


def answer_by_turn(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    turn = sum(1 for message in body["messages"] if message.get("role") == "assistant")
    return httpx.Response(200, json=ANSWERS[turn])


def openai_agent(
    router: respx.Router, *, instructions: str = INSTRUCTIONS, extra_tools: tuple[Any, ...] = ()
) -> agentdur.Agent:
    return agentdur.Agent(
        "replay-openai-support",
        OpenAIChat("gpt-4o-mini", client=openai_client(router)),
        tools=[lookup_order, refund_order, *extra_tools],
        instructions=instructions,
        model_retries=0,
    )


@pytest.fixture
def recorded(rt: agentdur.Runtime) -> tuple[respx.Router, agentdur.Agent]:
    """A finished agent run "rec-1" (5 steps), made through the OpenAI SDK."""
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(side_effect=answer_by_turn)
    agent = openai_agent(router)
    result = rt.run_agent(agent, PROMPT, run_id="rec-1")
    assert result.output == FINAL_TEXT
    assert route.call_count == 3
    assert COUNTS == {"lookup_order": 1, "refund_order": 1}
    return router, agent


def offline(router: respx.Router) -> respx.Route:
    """Replace every route by one whose every request fails, as with no network."""
    router.routes.clear()
    return router.post(CHAT_URL).mock(side_effect=httpx.ConnectError("the network is off"))


# -- replay ----------------------------------------------------------------------------


def test_replay_returns_the_recording_with_no_network_no_tool_and_no_write(
    rt: agentdur.Runtime, database_url: str, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    router, _ = recorded
    failing = offline(router)
    before = table_dump(database_url)
    seen: list[agentdur.StepInfo] = []

    output = rt.replay("rec-1", on_step=seen.append)

    assert output == rt.get_run("rec-1").output
    assert output["output"] == FINAL_TEXT
    assert failing.call_count == 0
    assert COUNTS == {"lookup_order": 1, "refund_order": 1}
    assert table_dump(database_url) == before
    assert seen == rt.steps("rec-1")
    assert [(s.step_index, s.kind, s.name) for s in seen] == [
        (0, "llm", "gpt-4o-mini"),
        (1, "tool", "lookup_order"),
        (2, "llm", "gpt-4o-mini"),
        (3, "tool", "refund_order"),
        (4, "llm", "gpt-4o-mini"),
    ]


def test_replay_reads_the_recording_off_the_runtimes_loop(
    rt: agentdur.Runtime,
    recorded: tuple[respx.Router, agentdur.Agent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop runs other runs' coroutines: loading a long recording must not stall it."""
    on_loop: list[bool] = []
    load = rt.store.steps

    def steps(run_id: str) -> list[agentdur.StepInfo]:
        on_loop.append(rt._in_loop_thread())
        return load(run_id)

    monkeypatch.setattr(rt.store, "steps", steps)
    assert rt.replay("rec-1")["output"] == FINAL_TEXT
    assert on_loop == [False]


def test_the_offline_route_really_fails_a_live_run(
    rt: agentdur.Runtime, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    router, agent = recorded
    failing = offline(router)
    with pytest.raises(agentdur.ModelError):
        rt.run_agent(agent, PROMPT, run_id="live-after-offline")
    assert failing.call_count == 1


def test_replay_until_stops_after_that_step(
    rt: agentdur.Runtime, database_url: str, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    router, _ = recorded
    failing = offline(router)
    before = table_dump(database_url)
    seen: list[int] = []
    assert rt.replay("rec-1", until=2, on_step=lambda step: seen.append(step.step_index)) is None
    assert seen == [0, 1, 2]
    assert failing.call_count == 0
    assert table_dump(database_url) == before


@pytest.mark.anyio
async def test_areplay_from_another_event_loop(
    rt: agentdur.Runtime, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    offline(recorded[0])
    output = await rt.areplay("rec-1")
    assert output["output"] == FINAL_TEXT


def test_changed_instructions_diverge_at_step_0_naming_the_message(
    rt: agentdur.Runtime, database_url: str, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    router, original = recorded
    offline(router)
    before = table_dump(database_url)
    rt.register(openai_agent(router, instructions="You are a terse support agent."), replace=True)
    try:
        with pytest.raises(agentdur.NonDeterminismError) as info:
            rt.replay("rec-1")
    finally:
        rt.register(original, replace=True)
    assert info.value.index == 0
    message = str(info.value)
    assert "diverged from its recording at step 0" in message
    # Where the texts differ, the same window of both (issue 10 item 13).
    assert (
        "new message 0 (system) changed at character 10: 'You are a terse support agent.' "
        "(recorded 'You are a support agent. Look orders up before ref...')"
    ) in message
    assert table_dump(database_url) == before


def test_a_changed_tool_list_diverges_at_step_0(
    rt: agentdur.Runtime, recorded: tuple[respx.Router, agentdur.Agent]
) -> None:
    router, original = recorded
    offline(router)
    rt.register(openai_agent(router, extra_tools=(email_customer,)), replace=True)
    try:
        with pytest.raises(agentdur.NonDeterminismError) as info:
            rt.replay("rec-1")
    finally:
        rt.register(original, replace=True)
    assert info.value.index == 0
    assert "other tool definitions (lookup_order, refund_order, email_customer)" in str(info.value)
    assert COUNTS == {"lookup_order": 1, "refund_order": 1}


MODE = {"version": "v1"}


@agentdur.step(name="test_replay_fork.charge")
async def charge(order: str) -> str:
    _count("charge")
    return f"charged {order}"


@agentdur.step(name="test_replay_fork.invoice")
async def invoice(order: str) -> str:
    _count("invoice")
    return f"invoiced {order}"


@agentdur.step(name="test_replay_fork.bill")
async def bill(order: str) -> str:
    _count("bill")
    return f"billed {order}"


@agentdur.workflow(name="test_replay_fork.checkout")
async def checkout(order: str) -> list[str]:
    first = await charge(order)
    second = await (invoice(order) if MODE["version"] == "v1" else bill(order))
    return [first, second]


def test_a_plain_workflow_replays_and_a_renamed_step_diverges(
    rt: agentdur.Runtime, database_url: str
) -> None:
    MODE["version"] = "v1"
    assert rt.run(checkout, "o-1", run_id="plain-1") == ["charged o-1", "invoiced o-1"]
    before = table_dump(database_url)
    seen: list[str] = []
    assert rt.replay("plain-1", on_step=lambda s: seen.append(s.name)) == [
        "charged o-1",
        "invoiced o-1",
    ]
    assert seen == ["test_replay_fork.charge", "test_replay_fork.invoice"]
    MODE["version"] = "v2"
    try:
        with pytest.raises(agentdur.NonDeterminismError) as info:
            rt.replay("plain-1")
    finally:
        MODE["version"] = "v1"
    assert (info.value.index, info.value.recorded, info.value.requested) == (
        1,
        "step 'test_replay_fork.invoice'",
        "step 'test_replay_fork.bill'",
    )
    assert COUNTS == {"charge": 1, "invoice": 1}
    assert table_dump(database_url) == before


# -- fork: a Scripted support agent ----------------------------------------------------

USAGE = Usage(input_tokens=20, output_tokens=5)


def _results(messages: list[Message]) -> dict[str, str]:
    return {m.name: m.content for m in messages if isinstance(m, ToolResultMessage)}


async def support_script(messages: list[Message], info: ScriptInfo) -> ModelResponse:
    """lookup -> refund -> email -> a final text quoting every tool result after lookup."""
    results = _results(messages)
    if BLOCK["on"] and "lookup_order" in results and "refund_order" not in results:
        ENTERED.set()
        await asyncio.to_thread(GATE.wait, 30)
    if "lookup_order" not in results:
        response = Scripted.tool_call("lookup_order", {"order_id": "A17"})
    elif "refund_order" not in results and "email_customer" not in results:
        response = Scripted.tool_call("refund_order", {"order_id": "A17", "amount": 49.9})
    elif "email_customer" not in results:
        response = Scripted.tool_call("email_customer", {"order_id": "A17", "text": "refunded"})
    else:
        quoted = [content for name, content in results.items() if name != "lookup_order"]
        response = ModelResponse(text="done | " + " | ".join(quoted))
    return response.model_copy(update={"usage": USAGE})


def other_script(messages: list[Message], info: ScriptInfo) -> str | ModelResponse:
    """The model a fork switches to: refunds nothing and says so."""
    if "email_customer" not in _results(messages):
        return Scripted.tool_call("email_customer", {"order_id": "A17", "text": "no refund"})
    return "model B: no refund, emailed instead"


support = agentdur.Agent(
    "fork-support",
    Scripted(support_script),
    tools=[lookup_order, refund_order, email_customer],
    instructions=INSTRUCTIONS,
)
ORIGINAL_OUTPUT = 'done | {"amount":49.9,"refund_id":"re_A17"} | emailed A17'
NAMES = [
    "scripted",
    "lookup_order",
    "scripted",
    "refund_order",
    "scripted",
    "email_customer",
    "scripted",
]


@pytest.fixture
def source(rt: agentdur.Runtime) -> list[agentdur.StepInfo]:
    """A finished run "src" of the support agent: 7 steps, one refund, one email."""
    result = rt.run_agent(support, PROMPT, run_id="src")
    assert result.output == ORIGINAL_OUTPUT
    steps = rt.steps("src")
    assert [s.name for s in steps] == NAMES
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 1}
    return steps


def _what(step: agentdur.StepInfo) -> tuple[Any, ...]:
    return (step.step_index, step.kind, step.name, step.status, step.input, step.output)


def test_fork_copies_the_prefix_as_inherited_and_executes_the_rest(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    handle = rt.fork("src", 3, new_run_id="f-live")
    assert handle.run_id == "f-live"
    assert handle.result()["output"] == ORIGINAL_OUTPUT
    run = rt.get_run("f-live")
    assert (run.status, run.forked_from, run.forked_at) == ("SUCCEEDED", "src", 3)
    assert run.workflow == "agent:fork-support"
    assert run.input == rt.get_run("src").input
    steps = rt.steps("f-live")
    assert [s.name for s in steps] == NAMES
    assert [s.inherited_from for s in steps] == ["src"] * 3 + [None] * 4
    assert [_what(s) for s in steps[:3]] == [_what(s) for s in source[:3]]
    assert [s.started_at for s in steps[:3]] == [s.started_at for s in source[:3]]
    # Step 3 (the refund) and everything after it ran again.
    assert COUNTS == {"lookup_order": 1, "refund_order": 2, "email_customer": 2}
    assert not any(s.edited or s.dry_run for s in steps)
    assert rt.get_run("src").forked_from is None


@pytest.mark.parametrize(
    "response",
    [
        ModelResponse(text="Edited: a new lid is on its way."),
        {"text": "Edited: a new lid is on its way."},
        '{"text": "Edited: a new lid is on its way."}',
    ],
    ids=["ModelResponse", "dict", "json-text"],
)
def test_fork_with_an_edited_response_records_it_as_edited(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo], response: Any
) -> None:
    handle = rt.fork("src", 2, response=response, new_run_id="f-edit")
    assert handle.result()["output"] == "Edited: a new lid is on its way."
    steps = rt.steps("f-edit")
    assert [s.name for s in steps] == NAMES[:3]
    edited = steps[2]
    assert (edited.kind, edited.edited, edited.inherited_from) == ("llm", True, None)
    assert edited.usage == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert edited.model == "scripted"
    replaced = response_of(edited)
    assert (replaced.text, replaced.stop_reason, replaced.raw) == (
        "Edited: a new lid is on its way.",
        "end_turn",
        None,
    )
    assert replaced.model == "scripted"
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 1}


def test_an_edited_response_with_a_tool_call_continues_the_run(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    response = {
        "tool_calls": [
            {"name": "email_customer", "arguments": {"order_id": "A17", "text": "sorry"}}
        ]
    }
    handle = rt.fork("src", 2, response=response, new_run_id="f-edit-call")
    assert handle.result()["output"] == "done | emailed A17"
    steps = rt.steps("f-edit-call")
    assert [(s.name, s.edited) for s in steps] == [
        ("scripted", False),
        ("lookup_order", False),
        ("scripted", True),
        ("email_customer", False),
        ("scripted", False),
    ]
    call = response_of(steps[2])
    assert call.stop_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in call.tool_calls] == [
        ("email_customer", {"order_id": "A17", "text": "sorry"})
    ]
    assert steps[3].input["arguments"] == {"order_id": "A17", "text": "sorry"}
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 2}


def test_fork_switches_to_a_model_instance_for_the_rest(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    other = Scripted(other_script, model_name="scripted-b")
    handle = rt.fork("src", 2, model=other, new_run_id="f-model")
    assert handle.result()["output"] == "model B: no refund, emailed instead"
    steps = rt.steps("f-model")
    assert [(s.kind, s.name, s.model) for s in steps] == [
        ("llm", "scripted", "scripted"),
        ("tool", "lookup_order", None),
        ("llm", "scripted-b", "scripted-b"),
        ("tool", "email_customer", None),
        ("llm", "scripted-b", "scripted-b"),
    ]
    assert rt.get_run("f-model").metadata["fork"]["models"] == [
        {"from": 2, "provider": "scripted", "model": "scripted-b", "params": {}}
    ]
    assert COUNTS["refund_order"] == 1


def test_fork_switches_to_a_model_name_for_the_rest(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    handle = rt.fork("src", 4, model="scripted-large", new_run_id="f-name")
    assert handle.result()["output"] == ORIGINAL_OUTPUT
    steps = rt.steps("f-name")
    llm = [(s.step_index, s.name, s.model) for s in steps if s.kind == "llm"]
    assert llm == [
        (0, "scripted", "scripted"),
        (2, "scripted", "scripted"),
        (4, "scripted-large", "scripted-large"),
        (6, "scripted-large", "scripted-large"),
    ]


def test_a_dry_run_fork_executes_no_side_effect(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    handle = rt.fork("src", 2, dry_run=True, new_run_id="f-dry")
    output = handle.result()["output"]
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 1}
    steps = rt.steps("f-dry")
    assert [s.name for s in steps] == NAMES
    assert [s.dry_run for s in steps] == [False] * 3 + [True, False, True, False]
    refund, email = steps[3], steps[5]
    assert refund.output["simulated"] is True
    assert refund.output["message"].startswith("DRY RUN: refund_order was NOT executed")
    assert email.output == "(simulated) would email A17: refunded"
    # Both simulated results reached the model, which quoted them in its answer.
    assert output == (
        "done | " + refund.output["message"] + " | (simulated) would email A17: refunded"
    )
    assert rt.get_run("f-dry").metadata["fork"]["dry_run"] is True


def test_a_fork_of_a_fork_inherits_from_the_run_that_executed_each_step(
    rt: agentdur.Runtime, source: list[agentdur.StepInfo]
) -> None:
    rt.fork("src", 4, new_run_id="f-1").result()
    assert rt.fork("f-1", 6, new_run_id="f-2", dry_run=True).result()["output"] == (ORIGINAL_OUTPUT)
    steps = rt.steps("f-2")
    assert [s.inherited_from for s in steps] == ["src"] * 4 + ["f-1"] * 2 + [None]
    run = rt.get_run("f-2")
    assert (run.forked_from, run.forked_at, run.status) == ("f-1", 6, "SUCCEEDED")
    # f-1 re-ran the email (step 5); f-2 re-ran only the final LLM step.
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 2}


def test_bad_fork_arguments_raise_and_write_nothing(
    rt: agentdur.Runtime, database_url: str, source: list[agentdur.StepInfo]
) -> None:
    before = table_dump(database_url)
    with pytest.raises(agentdur.RunNotFoundError, match="no run with id 'nope'"):
        rt.fork("nope", 0)
    with pytest.raises(
        agentdur.UsageError,
        match=r"at_step 7 is out of range: run 'src' has 7 recorded steps \(0\.\.6\)",
    ):
        rt.fork("src", 7)
    with pytest.raises(agentdur.UsageError, match="at_step -1 is out of range"):
        rt.fork("src", -1)
    with pytest.raises(
        agentdur.UsageError,
        match=r"response= replaces an LLM response, but step 1 of run 'src' is a tool step "
        r"\('lookup_order'\)",
    ):
        rt.fork("src", 1, response={"text": "hi"})
    with pytest.raises(agentdur.UsageError, match="response= is not valid JSON"):
        rt.fork("src", 2, response="{not json")
    with pytest.raises(agentdur.UsageError, match="a run with that id exists"):
        rt.fork("src", 2, new_run_id="src")
    assert table_dump(database_url) == before
    assert [run.run_id for run in rt.list_runs()] == ["src"]


def test_a_recovered_fork_keeps_its_model_switch_and_dry_run(
    database_url: str, source: list[agentdur.StepInfo]
) -> None:
    first = agentdur.Runtime(database_url, executor_id="fork-recovery")
    BLOCK["on"] = True
    first.fork("src", 2, model="scripted-r", dry_run=True, new_run_id="f-rec")
    assert ENTERED.wait(20)
    wait_for(lambda: len(first.steps("f-rec")) == 2, what="the copied steps")
    first.close()  # as if the process died while the fork waited for its model
    BLOCK["on"] = False
    GATE.set()

    with agentdur.Runtime(database_url, executor_id="fork-recovery") as second:
        assert second.get_run("f-rec").status == "RUNNING"
        (handle,) = second.recover()
        assert handle.run_id == "f-rec"
        handle.result(timeout=30)
        steps = second.steps("f-rec")
    assert [(s.name, s.dry_run) for s in steps] == [
        ("scripted", False),
        ("lookup_order", False),
        ("scripted-r", False),
        ("refund_order", True),
        ("scripted-r", False),
        ("email_customer", True),
        ("scripted-r", False),
    ]
    assert COUNTS == {"lookup_order": 1, "refund_order": 1, "email_customer": 1}


def test_replaying_a_fork_needs_no_model_and_runs_no_tool(
    rt: agentdur.Runtime, database_url: str, source: list[agentdur.StepInfo]
) -> None:
    rt.fork("src", 2, response={"text": "edited"}, new_run_id="f-e").result()
    rt.fork("src", 2, model="scripted-x", dry_run=True, new_run_id="f-x").result()
    before = table_dump(database_url)
    counts = dict(COUNTS)
    assert rt.replay("f-e")["output"] == "edited"
    assert rt.replay("f-x")["output"].startswith("done | DRY RUN: refund_order")
    assert counts == COUNTS
    assert table_dump(database_url) == before
    assert UserMessage(content=PROMPT) in rt.agent_result(support, "f-x", {}).messages
    assert AssistantMessage(content="edited") in rt.agent_result(support, "f-e", {}).messages
