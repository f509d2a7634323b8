"""The agent loop end to end with the Scripted model, on SQLite and PostgreSQL.

Each test checks what a user would look at: the run's output and status, the recorded
steps (kind, name, status, input, output, attempts), the messages the model was given
(a Scripted *function* keeps every request it answered) and `AgentResult.messages`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

import agentdur
from agentdur.agent import _Loop
from agentdur.context import RunContext
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentdur.models.base import StreamDone, TextDelta, ToolCallDelta, ToolCallStarted
from agentdur.testing import Scripted, ScriptInfo
from tests.helpers import wait_for

# -- tools ------------------------------------------------------------------------------

EVENTS: list[tuple[str, str, float]] = []
"""(what, label, monotonic time) written by the timed tools."""
COUNTS: dict[str, int] = {}
ATTEMPTS: list[int] = []
THREADS: dict[str, str] = {}
ENTERED = threading.Event()
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    EVENTS.clear()
    COUNTS.clear()
    ATTEMPTS.clear()
    THREADS.clear()
    ENTERED.clear()
    GATE.clear()


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@agentdur.tool(effect="read_only")
def add(a: int, b: int) -> int:
    """Add two integers."""
    _count("add")
    THREADS["add"] = threading.current_thread().name
    return a + b


@agentdur.tool(effect="read_only")
async def lookup(city: str) -> dict[str, Any]:
    """The weather in a city."""
    _count("lookup")
    THREADS["lookup"] = threading.current_thread().name
    return {"city": city, "temp": 21}


@agentdur.tool
def explode(reason: str) -> str:
    """Always fails."""
    _count("explode")
    raise ValueError(f"kaput: {reason}")


@agentdur.tool(effect="read_only")
async def nap(label: str, seconds: float) -> str:
    """Sleeps, logging when it starts and ends."""
    EVENTS.append(("start", label, time.monotonic()))
    await asyncio.sleep(seconds)
    EVENTS.append(("end", label, time.monotonic()))
    return f"{label} rested"


@agentdur.tool(effect="idempotent", retries=2)
def flaky(ctx: agentdur.ToolContext, value: str) -> str:
    """Fails on its first attempt."""
    ATTEMPTS.append(ctx.attempt)
    if ctx.attempt == 1:
        raise ConnectionError("upstream hiccup")
    return value.upper()


@agentdur.tool(effect="read_only")
def first(n: int) -> int:
    """Counts its executions."""
    _count("first")
    return n + 1


@agentdur.tool(effect="read_only")
def block(n: int) -> int:
    """Blocks until the test opens GATE."""
    _count("block")
    ENTERED.set()
    GATE.wait(30)
    return n * 10


# -- helpers ----------------------------------------------------------------------------

Answer = ModelResponse | str | Callable[[list[Message]], ModelResponse | str]


class Script:
    """A Scripted function: answer number i for request i; keeps every request."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[list[Message]] = []

    def __call__(self, messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        self.seen.append(list(messages))
        answer = self.answers[len(self.seen) - 1]
        return answer(messages) if callable(answer) else answer


def rows(rt: agentdur.Runtime, run_id: str) -> list[tuple[int, str, str, str, int]]:
    return [(s.step_index, s.kind, s.name, s.status, s.attempts) for s in rt.steps(run_id)]


def call(name: str, call_id: str, **arguments: Any) -> ModelResponse:
    return Scripted.tool_call(name, arguments, id=call_id)


def raw_call(name: str, call_id: str, raw: str) -> ModelResponse:
    return ModelResponse(
        tool_calls=[ToolCall.from_raw(call_id, name, raw)], stop_reason="tool_calls"
    )


def final(text: str, **usage: int) -> ModelResponse:
    return ModelResponse(text=text, usage=Usage(**usage))


def agent(name: str, script: Any, tools: list[Any] | None = None, **options: Any) -> Any:
    return agentdur.Agent(f"t_loop_{name}", Scripted(script), tools or [], **options)


# -- the basic loop ---------------------------------------------------------------------


def test_final_answer_without_tools(rt: agentdur.Runtime) -> None:
    script = Script(final("Hello there.", input_tokens=12, output_tokens=3))
    bot = agent("no_tools", script, instructions="Be brief.")
    result = rt.run_agent(bot, "Hi!", run_id="r")

    assert (result.output, result.run_id) == ("Hello there.", "r")
    assert script.seen == [[SystemMessage(content="Be brief."), UserMessage(content="Hi!")]]
    assert result.messages == [*script.seen[0], AssistantMessage(content="Hello there.")]
    assert result.usage == Usage(input_tokens=12, output_tokens=3)
    assert rt.get_run("r").status == "SUCCEEDED"
    assert rt.get_run("r").output == {
        "output": "Hello there.",
        "usage": Usage(input_tokens=12, output_tokens=3).model_dump(),
    }
    (step,) = rt.steps("r")
    assert (step.kind, step.name, step.status, step.attempts) == ("llm", "scripted", "SUCCEEDED", 1)
    assert (step.model, step.usage["input_tokens"], step.usage["output_tokens"]) == (
        "scripted",
        12,
        3,
    )
    assert step.input == {
        "provider": "scripted",
        "params": {},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi!"},
        ],
        "tools": [],
    }
    assert set(step.output) == {"response", "latency_ms"}
    assert step.output["response"]["text"] == "Hello there."
    assert step.request_hash is not None and len(step.request_hash) == 64


def test_one_tool_call_then_answer(rt: agentdur.Runtime) -> None:
    script = Script(
        call("add", "c1", a=2, b=3).model_copy(update={"usage": Usage(input_tokens=10)}),
        final("2 + 3 = 5", input_tokens=20, output_tokens=4),
    )
    bot = agent("one_tool", script, [add])
    result = rt.run_agent(bot, "What is 2 + 3?", run_id="r")

    assert result.output == "2 + 3 = 5"
    assert rows(rt, "r") == [
        (0, "llm", "scripted", "SUCCEEDED", 1),
        (1, "tool", "add", "SUCCEEDED", 1),
        (2, "llm", "scripted", "SUCCEEDED", 1),
    ]
    tool_step = rt.steps("r")[1]
    assert tool_step.input == {
        "call_id": "c1",
        "arguments": {"a": 2, "b": 3},
        "effect": "read_only",
    }
    assert tool_step.output == 5
    assert tool_step.idempotency_key == "r:1"
    assert COUNTS == {"add": 1}
    # The second request: the question, the assistant's call, the tool's result.
    assert script.seen[1] == [
        UserMessage(content="What is 2 + 3?"),
        AssistantMessage(tool_calls=script.answers[0].tool_calls),  # type: ignore[union-attr]
        ToolResultMessage(tool_call_id="c1", name="add", content="5"),
    ]
    assert result.messages == [*script.seen[1], AssistantMessage(content="2 + 3 = 5")]
    assert result.usage == Usage(input_tokens=30, output_tokens=4)
    assert [s.usage["input_tokens"] for s in rt.steps("r") if s.kind == "llm"] == [10, 20]


def test_parallel_tool_calls_keep_model_order(rt: agentdur.Runtime) -> None:
    calls = Scripted.tool_calls(
        [
            ("nap", {"label": "slow", "seconds": 0.4}),
            ("nap", {"label": "fast", "seconds": 0.0}),
            ("add", {"a": 1, "b": 1}),
        ]
    )
    script = Script(calls, "all rested")
    bot = agent("parallel", script, [nap, add])
    result = rt.run_agent(bot, "rest", run_id="r")

    assert result.output == "all rested"
    steps = rt.steps("r")
    assert [(s.step_index, s.name, s.input["arguments"].get("label")) for s in steps[1:4]] == [
        (1, "nap", "slow"),
        (2, "nap", "fast"),
        (3, "add", None),
    ]
    # They ran at the same time: the fast one started and finished inside the slow one.
    order = [(what, label) for what, label, _ in EVENTS]
    assert order == [("start", "slow"), ("start", "fast"), ("end", "fast"), ("end", "slow")]
    assert steps[2].finished_at < steps[1].finished_at  # type: ignore[operator]
    # The results go back in the order the model listed the calls, not completion order.
    results = [m for m in script.seen[1] if isinstance(m, ToolResultMessage)]
    assert [(m.tool_call_id, m.content) for m in results] == [
        (calls.tool_calls[0].id, "slow rested"),
        (calls.tool_calls[1].id, "fast rested"),
        (calls.tool_calls[2].id, "2"),
    ]
    assert result.messages == [*script.seen[1], AssistantMessage(content="all rested")]


def test_parallel_tool_calls_false_runs_one_after_another(rt: agentdur.Runtime) -> None:
    calls = Scripted.tool_calls(
        [("nap", {"label": "one", "seconds": 0.2}), ("nap", {"label": "two", "seconds": 0.0})]
    )
    bot = agent("sequential", Script(calls, "done"), [nap], parallel_tool_calls=False)
    assert rt.run_agent(bot, "rest", run_id="r").output == "done"
    order = [(what, label) for what, label, _ in EVENTS]
    assert order == [("start", "one"), ("end", "one"), ("start", "two"), ("end", "two")]
    assert EVENTS[2][2] >= EVENTS[1][2]
    assert [s.name for s in rt.steps("r")] == ["scripted", "nap", "nap", "scripted"]


def test_sync_tool_runs_in_a_worker_thread_async_tool_on_the_loop(rt: agentdur.Runtime) -> None:
    calls = Scripted.tool_calls([("add", {"a": 1, "b": 2}), ("lookup", {"city": "Oslo"})])
    script = Script(calls, "ok")
    rt.run_agent(agent("sync_async", script, [add, lookup]), "go", run_id="r")
    assert THREADS["lookup"] == "agentdur-loop"
    assert THREADS["add"].startswith("agentdur") and THREADS["add"] != "agentdur-loop"
    assert [s.output for s in rt.steps("r")[1:3]] == [3, {"city": "Oslo", "temp": 21}]
    results = [m.content for m in script.seen[1] if isinstance(m, ToolResultMessage)]
    assert results == ["3", '{"city":"Oslo","temp":21}']


def test_tool_retries_until_it_succeeds(rt: agentdur.Runtime) -> None:
    script = Script(call("flaky", "c1", value="abc"), "ok")
    rt.run_agent(agent("retries", script, [flaky]), "go", run_id="r")
    assert ATTEMPTS == [1, 2]
    assert rows(rt, "r")[1] == (1, "tool", "flaky", "SUCCEEDED", 2)
    assert rt.steps("r")[1].output == "ABC"


def test_prompt_as_a_list_of_messages(rt: agentdur.Runtime) -> None:
    prompt: list[Message] = [
        SystemMessage(content="You add numbers."),
        UserMessage(content="1+1?"),
        AssistantMessage(content="2"),
        UserMessage(content="and 2+2?"),
    ]
    script = Script("4")
    result = rt.run_agent(agent("list_prompt", script, instructions="Be exact."), prompt)
    assert script.seen == [[SystemMessage(content="Be exact."), *prompt]]
    assert result.messages == [*script.seen[0], AssistantMessage(content="4")]
    assert rt.get_run(result.run_id).input["args"][0][2] == {
        "role": "assistant",
        "content": "2",
        "tool_calls": [],
    }


def test_prompt_opening_with_an_assistant_greeting(rt: agentdur.Runtime) -> None:
    prompt: list[Message] = [
        AssistantMessage(content="Hi! How can I help?"),
        UserMessage(content="What is 2+2?"),
    ]
    script = Script(call("add", "c1", a=2, b=2), "4")
    result = rt.run_agent(agent("greeting_prompt", script, [add]), prompt, run_id="r")
    assert script.seen[0] == prompt
    assert result.messages == [*script.seen[1], AssistantMessage(content="4")]
    assert rt.steps("r")[0].input["messages"][0] == {
        "role": "assistant",
        "content": "Hi! How can I help?",
        "tool_calls": [],
    }


async def test_arun_agent(rt: agentdur.Runtime, anyio_backend: str) -> None:
    script = Script(call("lookup", "c1", city="Rome"), "sunny")
    result = await rt.arun_agent(agent("async_run", script, [lookup]), "weather?", run_id="r")
    assert (result.output, result.run_id) == ("sunny", "r")
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]


def test_start_with_the_same_run_id_does_not_call_anything_again(rt: agentdur.Runtime) -> None:
    script = Script(call("add", "c1", a=1, b=2), final("three", input_tokens=5))
    bot = agent("idempotent", script, [add])
    first_result = rt.run_agent(bot, "1+2", run_id="same")
    again = rt.run_agent(bot, "1+2", run_id="same")
    handle = rt.start_agent(bot, "1+2", run_id="same")

    assert again == first_result
    assert handle.result() == {"output": "three", "usage": Usage(input_tokens=5).model_dump()}
    assert len(script.seen) == 2
    assert COUNTS == {"add": 1}
    with pytest.raises(agentdur.RunInputMismatchError):
        rt.run_agent(bot, "another prompt", run_id="same")


def test_result_messages_are_what_the_model_saw_last(rt: agentdur.Runtime) -> None:
    script = Script(
        Scripted.tool_calls([("add", {"a": 1, "b": 1}), ("nope", {})]),
        raw_call("add", "c2", '{"a": 1'),
        call("lookup", "c3", city="Paris"),
        "finished",
    )
    bot = agent("messages", script, [add, lookup], instructions="Use tools.")
    result = rt.run_agent(bot, "go", run_id="r")
    assert result.messages == [*script.seen[-1], AssistantMessage(content="finished")]
    # Every earlier request is a prefix of the last one: nothing was rewritten.
    for earlier in script.seen[:-1]:
        assert script.seen[-1][: len(earlier)] == earlier


def test_duplicate_call_ids_still_rebuild_the_conversation(rt: agentdur.Runtime) -> None:
    # Some OpenAI-compatible servers send one id (or none) for every call of a turn.
    calls = [
        ToolCall.from_arguments("dup", "add", {"a": 1, "b": 1}),
        ToolCall.from_arguments("dup", "add", {"a": 2, "b": 2}),
    ]
    script = Script(ModelResponse(tool_calls=calls, stop_reason="tool_calls"), "2 and 4")
    result = rt.run_agent(agent("dup_ids", script, [add]), "go", run_id="r")
    results = [m.content for m in script.seen[1] if isinstance(m, ToolResultMessage)]
    assert results == ["2", "4"]
    assert result.messages == [*script.seen[1], AssistantMessage(content="2 and 4")]
    assert rt.steps("r")[3].input["messages"] == [
        {"role": "tool", "step": 1},
        {"role": "tool", "step": 2},
    ]


# -- bad model output -------------------------------------------------------------------

BAD_OUTPUTS = {
    "malformed_json": (
        raw_call("add", "c1", '{"a": 1, "b": '),
        {"call_id": "c1", "raw_arguments": '{"a": 1, "b": '},
        "ToolArgumentsError",
        "Error: invalid arguments for tool 'add': not valid JSON (Expecting value at line 1, "
        'column 15): \'{"a": 1, "b": \'',
        agentdur.ToolArgumentsError,
    ),
    "schema": (
        raw_call("add", "c1", '{"a": 1, "b": "two", "c": 3}'),
        {"call_id": "c1", "raw_arguments": '{"a": 1, "b": "two", "c": 3}'},
        "ToolArgumentsError",
        "Error: invalid arguments for tool 'add': 'b': 'two' is not of type 'integer'; "
        "unknown argument 'c' (valid: 'a', 'b')",
        agentdur.ToolArgumentsError,
    ),
    "unknown_tool": (
        call("subtract", "c1", a=1, b=2),
        {"call_id": "c1", "arguments": {"a": 1, "b": 2}},
        "UnknownTool",
        "Error: unknown tool 'subtract'; available tools: add, explode",
        agentdur.ModelBehaviorError,
    ),
    "tool_raises": (
        call("explode", "c1", reason="test"),
        {"call_id": "c1", "arguments": {"reason": "test"}, "effect": "side_effect"},
        "ValueError",
        "Error: ValueError: kaput: test",
        ValueError,
    ),
}


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
def test_bad_output_goes_back_to_the_model(rt: agentdur.Runtime, case: str) -> None:
    response, step_input, error_type, told, _ = BAD_OUTPUTS[case]
    script = Script(response, call("add", "c2", a=1, b=2), "recovered")
    bot = agent(f"bad_{case}", script, [add, explode])
    result = rt.run_agent(bot, "go", run_id="r")

    assert result.output == "recovered"
    assert rt.get_run("r").status == "SUCCEEDED"
    assert rows(rt, "r")[1][1:4] == ("tool", response.tool_calls[0].name, "ERROR")
    step = rt.steps("r")[1]
    assert step.input == step_input
    assert step.output is None
    assert step.error["type"] == error_type
    # The model's next request carries the error as the call's result.
    assert script.seen[1][-1] == ToolResultMessage(
        tool_call_id="c1", name=response.tool_calls[0].name, content=told, is_error=True
    )
    # ... and the model could correct itself: the next call went through.
    assert rows(rt, "r")[3] == (3, "tool", "add", "SUCCEEDED", 1)
    assert result.messages == [*script.seen[-1], AssistantMessage(content="recovered")]


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
def test_bad_output_with_tool_errors_raise_fails_the_run(rt: agentdur.Runtime, case: str) -> None:
    response, step_input, _, _, exc_type = BAD_OUTPUTS[case]
    script = Script(response, "never")
    bot = agent(f"bad_raise_{case}", script, [add, explode], tool_errors="raise")
    with pytest.raises(exc_type) as raised:
        rt.run_agent(bot, "go", run_id="r")

    run = rt.get_run("r")
    assert run.status == "FAILED"
    assert run.error["type"] == exc_type.__name__
    assert run.error["message"] == str(raised.value)
    assert [r[1:4] for r in rows(rt, "r")] == [
        ("llm", "scripted", "SUCCEEDED"),
        ("tool", response.tool_calls[0].name, "ERROR"),
    ]
    assert rt.steps("r")[1].input == step_input
    assert len(script.seen) == 1
    # Waiting on the finished run again raises the same type.
    with pytest.raises(exc_type):
        rt.handle("r").result()


def test_tool_errors_raise_waits_for_the_other_parallel_calls(rt: agentdur.Runtime) -> None:
    calls = Scripted.tool_calls(
        [
            ("nap", {"label": "slow", "seconds": 0.3}),
            ("explode", {"reason": "first"}),
            ("explode", {"reason": "second"}),
        ]
    )
    bot = agent("raise_parallel", Script(calls, "never"), [nap, explode], tool_errors="raise")
    with pytest.raises(ValueError, match="kaput: first"):
        rt.run_agent(bot, "go", run_id="r")
    # The slow call was running: it finished and was recorded before the run failed.
    assert [r[1:4] for r in rows(rt, "r")] == [
        ("llm", "scripted", "SUCCEEDED"),
        ("tool", "nap", "SUCCEEDED"),
        ("tool", "explode", "ERROR"),
        ("tool", "explode", "ERROR"),
    ]
    assert rt.get_run("r").status == "FAILED"
    assert rt.get_run("r").error["message"] == "kaput: first"


BEHAVIOR = {
    "empty": (ModelResponse(text=None), "empty answer"),
    "blank": (ModelResponse(text="  \n"), "empty answer"),
    "refusal": (
        ModelResponse(stop_reason="refusal", refusal="I can't help with that."),
        "the model refused: I can't help with that.",
    ),
    "max_tokens": (ModelResponse(text="Once upon a", stop_reason="max_tokens"), "max_tokens"),
    "content_filter": (ModelResponse(text="", stop_reason="content_filter"), "content filter"),
}


@pytest.mark.parametrize("case", list(BEHAVIOR))
def test_unusable_answer_is_model_behavior_error(rt: agentdur.Runtime, case: str) -> None:
    response, message = BEHAVIOR[case]
    response = response.model_copy(update={"usage": Usage(input_tokens=7, output_tokens=1)})
    bot = agent(f"behavior_{case}", Script(response), [add])
    with pytest.raises(agentdur.ModelBehaviorError, match=message):
        rt.run_agent(bot, "go", run_id="r")
    run = rt.get_run("r")
    assert (run.status, run.error["type"]) == ("FAILED", "ModelBehaviorError")
    (step,) = rt.steps("r")
    assert (step.kind, step.status, step.attempts) == ("llm", "SUCCEEDED", 1)
    recorded = step.output["response"]
    assert (recorded["text"], recorded["stop_reason"], recorded["refusal"]) == (
        response.text,
        response.stop_reason,
        response.refusal,
    )
    assert step.usage["input_tokens"] == 7


def test_model_exception_is_recorded_on_the_llm_step(rt: agentdur.Runtime) -> None:
    def broken(messages: list[Message], info: ScriptInfo) -> str:
        raise RuntimeError("script bug")

    with pytest.raises(RuntimeError, match="script bug"):
        rt.run_agent(agent("model_raises", broken), "go", run_id="r")
    (step,) = rt.steps("r")
    assert (step.kind, step.status, step.attempts) == ("llm", "ERROR", 1)
    assert step.error["type"] == "RuntimeError"
    assert rt.get_run("r").status == "FAILED"


def test_max_turns_exceeded(rt: agentdur.Runtime) -> None:
    script = Script(*[call("add", f"c{i}", a=i, b=i) for i in range(5)])
    bot = agent("max_turns", script, [add], max_turns=3)
    with pytest.raises(agentdur.MaxTurnsExceeded, match="all 3 turns"):
        rt.run_agent(bot, "loop forever", run_id="r")
    assert len(script.seen) == 3
    assert [r[1] for r in rows(rt, "r")] == ["llm", "tool"] * 3
    run = rt.get_run("r")
    assert (run.status, run.error["type"]) == ("FAILED", "MaxTurnsExceeded")


# -- structured output ------------------------------------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    temp: int


REPAIR_PREFIX = "Your answer does not match the required JSON Schema: "


def test_output_type_validates_the_final_answer(rt: agentdur.Runtime) -> None:
    script = Script('```json\n{"city": "Oslo", "temp": 3}\n```')
    bot = agent("output_ok", script, output_type=Weather, instructions="Report weather.")
    result = rt.run_agent(bot, "Oslo?", run_id="r")
    assert result.output == Weather(city="Oslo", temp=3)
    assert rt.get_run("r").output["output"] == {"city": "Oslo", "temp": 3}
    system = script.seen[0][0]
    assert isinstance(system, SystemMessage)
    assert system.content.startswith("Report weather.\n\nGive your final answer as a single JSON")
    assert '"temp"' in system.content
    assert rt.run_agent(bot, "Oslo?", run_id="r").output == Weather(city="Oslo", temp=3)


def test_output_type_repair_turn_then_success(rt: agentdur.Runtime) -> None:
    script = Script('{"city": "Oslo", "temp": "cold"}', '{"city": "Oslo", "temp": -2}')
    result = rt.run_agent(agent("output_repair", script, output_type=Weather), "Oslo?")
    assert result.output == Weather(city="Oslo", temp=-2)
    repairs = [m for m in script.seen[1] if isinstance(m, UserMessage) and m.content != "Oslo?"]
    assert len(repairs) == 1
    assert script.seen[1][-1] == repairs[0]
    assert repairs[0].content == (
        REPAIR_PREFIX + "temp: Input should be a valid integer, unable to parse string as an "
        "integer. Answer again with only the JSON value."
    )
    assert [m.role for m in result.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert result.messages == [*script.seen[1], AssistantMessage(content=script.answers[1])]


def test_output_type_repair_turn_then_failure(rt: agentdur.Runtime) -> None:
    script = Script("sunny", "still not JSON", "never asked")
    bot = agent("output_fail", script, output_type=Weather)
    with pytest.raises(agentdur.ModelBehaviorError, match="even after a repair turn"):
        rt.run_agent(bot, "Oslo?", run_id="r")
    assert len(script.seen) == 2
    assert (
        sum(
            m.content.startswith(REPAIR_PREFIX)
            for m in script.seen[1]
            if isinstance(m, UserMessage)
        )
        == 1
    )
    assert [r[1:4] for r in rows(rt, "r")] == [("llm", "scripted", "SUCCEEDED")] * 2
    assert rt.get_run("r").status == "FAILED"


# -- recovery ---------------------------------------------------------------------------


def _blocking_script(calls: list[int]) -> Callable[[list[Message], ScriptInfo], Any]:
    def script(messages: list[Message], info: ScriptInfo) -> ModelResponse | str:
        calls.append(len(messages))
        turn = sum(isinstance(m, AssistantMessage) for m in messages)
        if turn == 0:
            return call("first", "c1", n=1)
        if turn == 1:
            return call("block", "c2", n=2)
        return "finished"

    return script


def _abandon_while_blocked(database_url: str, executor: str, name: str) -> str:
    calls: list[int] = []
    runtime = agentdur.Runtime(database_url, executor_id=executor)
    bot = agentdur.Agent(name, Scripted(_blocking_script(calls)), [first, block])
    handle = runtime.start_agent(bot, "go", run_id="r")
    assert ENTERED.wait(20), "the blocking tool never started"
    wait_for(lambda: len(runtime.steps("r")) == 3, what="3 recorded steps")
    runtime.close()
    assert calls == [1, 3]
    return handle.run_id


def test_recovery_replays_recorded_turns_and_runs_the_rest(database_url: str) -> None:
    executor = f"t-loop-{uuid.uuid4().hex[:8]}"
    name = "t_loop_recover"
    run_id = _abandon_while_blocked(database_url, executor, name)
    ENTERED.clear()
    GATE.set()

    calls: list[int] = []
    bot = agentdur.Agent(name, Scripted(_blocking_script(calls)), [first, block])
    with agentdur.Runtime(database_url, executor_id=executor) as second:
        assert second.get_run(run_id).status == "RUNNING"
        handles = second.recover()
        assert [h.run_id for h in handles] == [run_id]
        data = handles[0].result(timeout=20)
        result = second.agent_result(bot, run_id, data)
        assert result.output == "finished"
        assert calls == [5]  # only the turn that was not recorded
        assert COUNTS == {"first": 1, "block": 2}  # block was cut off mid-way, then re-ran
        assert rows(second, run_id) == [
            (0, "llm", "scripted", "SUCCEEDED", 1),
            (1, "tool", "first", "SUCCEEDED", 1),
            (2, "llm", "scripted", "SUCCEEDED", 1),
            (3, "tool", "block", "SUCCEEDED", 1),
            (4, "llm", "scripted", "SUCCEEDED", 1),
        ]
        assert second.steps(run_id)[3].output == 20
        assert [m.role for m in result.messages] == [
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
        ]


def test_changed_request_at_a_recorded_llm_step_is_nondeterminism(database_url: str) -> None:
    executor = f"t-loop-{uuid.uuid4().hex[:8]}"
    name = "t_loop_nondeterminism"
    run_id = _abandon_while_blocked(database_url, executor, name)
    GATE.set()

    calls: list[int] = []
    changed = agentdur.Agent(
        name, Scripted(_blocking_script(calls)), [first, block], instructions="New rules."
    )
    with agentdur.Runtime(database_url, executor_id=executor) as second:
        before = second.steps(run_id)
        second.register(changed)
        (handle,) = second.recover()
        with pytest.raises(agentdur.NonDeterminismError) as raised:
            handle.result(timeout=20)
        assert raised.value.index == 0
        assert "at step 0" in str(raised.value)
        assert "llm 'scripted'" in str(raised.value)
        assert calls == []
        assert second.steps(run_id) == before  # nothing recorded was overwritten
        assert COUNTS == {"first": 1, "block": 1}


async def test_replayed_steps_emit_their_recorded_events(
    rt: agentdur.Runtime, anyio_backend: str
) -> None:
    script = Script(call("add", "c1", a=1, b=2), "The sum is 3.")
    bot = agent("replay_events", script, [add])
    await rt.arun_agent(bot, "go", run_id="r")
    recorded = {s.step_index: s for s in await asyncio.to_thread(rt.steps, "r")}
    events: list[Any] = []
    ctx = RunContext(
        store=rt.store,
        clock=rt.clock,
        run_id="r",
        workflow=bot.workflow.name,
        epoch=1,
        recorded=recorded,
        replay=True,
    )
    ctx.values["emit"] = events.append
    token = ctx.activate()
    try:
        data = await _Loop(bot, ctx).run("go")
    finally:
        ctx.deactivate(token)
    assert data["output"] == "The sum is 3."
    assert len(script.seen) == 2 and COUNTS == {"add": 1}
    assert not any(isinstance(e, StreamDone) for e in events)
    assert events[:2] == [
        ToolCallStarted(0, "c1", "add"),
        ToolCallDelta(0, '{"a": 1, "b": 2}'),
    ]
    assert "".join(e.text for e in events[2:]) == "The sum is 3."


# -- streaming --------------------------------------------------------------------------


def test_stream_agent_yields_events_then_result(rt: agentdur.Runtime) -> None:
    script = Script(
        call(
            "lookup",
            "c1",
            city="Rome",
        ),
        "It is sunny in Rome.",
    )
    stream = rt.stream_agent(agent("stream", script, [lookup]), "weather?", run_id="r")
    assert stream.result is None
    events = list(stream)
    assert not any(isinstance(e, StreamDone) for e in events)
    assert events[:2] == [
        ToolCallStarted(0, "c1", "lookup"),
        ToolCallDelta(0, '{"city": "Rome"}'),
    ]
    assert all(isinstance(e, TextDelta) for e in events[2:])
    assert "".join(e.text for e in events[2:]) == "It is sunny in Rome."
    assert stream.result is not None
    assert (stream.result.output, stream.result.run_id, stream.run_id) == (
        "It is sunny in Rome.",
        "r",
        "r",
    )
    assert stream.result.messages == [*script.seen[1], AssistantMessage(content=script.answers[1])]
    assert [r[1:4] for r in rows(rt, "r")] == [
        ("llm", "scripted", "SUCCEEDED"),
        ("tool", "lookup", "SUCCEEDED"),
        ("llm", "scripted", "SUCCEEDED"),
    ]


async def test_stream_agent_async_iteration(rt: agentdur.Runtime, anyio_backend: str) -> None:
    stream = rt.stream_agent(agent("stream_async", Script("one two three")), "count")
    texts = [e.text async for e in stream if isinstance(e, TextDelta)]
    assert "".join(texts) == "one two three"
    assert len(texts) == 3
    assert stream.result is not None and stream.result.output == "one two three"


def test_stream_agent_on_a_finished_run_yields_nothing(rt: agentdur.Runtime) -> None:
    script = Script("all done")
    bot = agent("stream_done", script)
    rt.run_agent(bot, "go", run_id="r")
    stream = rt.stream_agent(bot, "go", run_id="r")
    assert list(stream) == []
    assert stream.result is not None
    assert (stream.result.output, stream.result.run_id) == ("all done", "r")
    assert len(script.seen) == 1


def test_stream_agent_failure_raises_after_the_events(rt: agentdur.Runtime) -> None:
    stream = rt.stream_agent(agent("stream_fail", Script(ModelResponse(text=""))), "go")
    with pytest.raises(agentdur.ModelBehaviorError):
        list(stream)
    assert rt.get_run(stream.run_id).status == "FAILED"


def test_recorded_llm_input_holds_only_new_messages(rt: agentdur.Runtime) -> None:
    script = Script(call("add", "c1", a=1, b=1), call("add", "c2", a=2, b=2), "done")
    rt.run_agent(agent("new_only", script, [add], instructions="Add."), "go", run_id="r")
    inputs = [s.input for s in rt.steps("r") if s.kind == "llm"]
    assert inputs[0]["messages"] == [
        {"role": "system", "content": "Add."},
        {"role": "user", "content": "go"},
    ]
    assert "tools" in inputs[0]
    assert inputs[1] == {
        "provider": "scripted",
        "params": {},
        "messages": [{"role": "tool", "step": 1}],
    }
    assert inputs[2] == {
        "provider": "scripted",
        "params": {},
        "messages": [{"role": "tool", "step": 3}],
    }


@agentdur.tool(effect="read_only")
def profile(user: str) -> dict[str, Any]:
    """Keys in an order JSONB does not keep (it sorts by length, then bytes)."""
    return {"zeta_long_key": 1, "alpha": [{"yy": 1, "b": 2}], "m": user}


def test_replay_and_messages_do_not_depend_on_the_stored_key_order(rt: agentdur.Runtime) -> None:
    script = Script(call("profile", "c1", user="ann"), "done")
    bot = agent("key_order", script, [profile])
    result = rt.run_agent(bot, "who?", run_id="r")
    assert result.messages == [*script.seen[1], AssistantMessage(content="done")]
    told = script.seen[1][-1]
    assert isinstance(told, ToolResultMessage)
    assert json.loads(told.content) == profile.fn("ann")
    assert rt.replay("r") == {"output": "done", "usage": Usage().model_dump()}
    assert len(script.seen) == 2
