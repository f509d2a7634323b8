"""What a run records is exactly what it saw, within a cap, and options are checked.

Issue 10 items 6-9: NaN and Infinity are a `SerializationError` naming the step (never
retried); any Python `str` (NUL, lone surrogates) round-trips on both backends, live, on
recovery and in replay; recorded values have a cap (`Runtime(max_value_bytes=...)`);
an unknown option of `tool`, `step`, `workflow`, `Agent`, `Queue` or `Runtime` is a
`UsageError` naming the closest valid one.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import agentdur
from agentdur import codec
from agentdur.models import ModelResponse
from agentdur.testing import Scripted

STRANGE = ["a\x00b", "\ud800", "x\udc00\ud83d", "\ufdd0" + "0000", "back\\u0000slash", "é"]


def fresh(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


# -- item 6: NaN and Infinity -----------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_in_a_step_output_is_a_serialization_error_naming_the_step(
    rt: agentdur.Runtime, bad: float
) -> None:
    calls = []

    @agentdur.step(name="measure", retries=3, backoff=0.0)
    def measure() -> dict[str, Any]:
        calls.append(1)
        return {"ratio": bad}

    @agentdur.workflow(name=fresh("nan"))
    def wf() -> Any:
        return measure()

    with pytest.raises(agentdur.SerializationError) as caught:
        rt.run(wf, run_id="r1")
    assert str(caught.value) == (
        "cannot store the output of step 0 'measure' as JSON: it contains NaN or Infinity, "
        "which JSON cannot hold. Return None, a string or a finite number instead."
    )
    assert calls == [1]  # never retried
    assert rt.get_run("r1").status == "FAILED"
    assert rt.get_run("r1").error["type"] == "SerializationError"
    assert rt.steps("r1") == []  # nothing recorded for the step


def test_dumps_names_the_value_for_nan() -> None:
    with pytest.raises(agentdur.SerializationError, match=r"^cannot store the x as JSON: it"):
        codec.dumps([float("nan")], what="the x")


# -- item 7: any str round-trips ---------------------------------------------------------


@pytest.mark.parametrize("value", [*STRANGE, {"k\x00\ud800": STRANGE}, ["\ufdd0d800"]])
def test_codec_round_trips_any_str(value: Any) -> None:
    text = codec.dumps(value)
    text.encode()  # always valid UTF-8
    assert codec.loads(text) == value
    assert codec.loads(text.encode()) == value


def test_ordinary_text_is_stored_unchanged() -> None:
    value = {"text": "plain, ünïcödé, emoji 😀, a \\ backslash, \\\\u0000 text"}
    assert codec.dumps(value) == codec.json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_a_step_returning_nul_and_lone_surrogates_round_trips(
    rt: agentdur.Runtime, database_url: str
) -> None:
    @agentdur.step(name="echo")
    def echo(value: str) -> str:
        return value

    @agentdur.step(name="keys")
    def keys() -> dict[str, str]:
        return {"k\x00": "\ud800", "\ufdd0": "ok"}

    name = fresh("strings")

    @agentdur.workflow(name=name)
    def wf(values: list[str]) -> list[Any]:
        return [echo(v) for v in values] + [keys()]

    expected = [*STRANGE, {"k\x00": "\ud800", "\ufdd0": "ok"}]
    assert rt.run(wf, STRANGE, run_id="s1") == expected
    steps = rt.steps("s1")
    assert [s.output for s in steps] == expected
    assert steps[0].input == {"args": ["a\x00b"]}
    assert rt.replay("s1") == expected

    with agentdur.Runtime(database_url, executor_id="other") as again:
        assert again.get_run("s1").output == expected
        assert again.get_run("s1").input == {"args": [STRANGE], "kwargs": {}}
        assert again.handle("s1").result() == expected
        assert again.replay("s1") == expected


def test_a_prompt_and_tool_result_with_nul_round_trip(
    rt: agentdur.Runtime, database_url: str
) -> None:
    @agentdur.tool(effect="side_effect")
    def lookup(q: str) -> str:
        """Look up."""
        return "row\x00" + q

    def script(messages: list[Any], info: Any) -> ModelResponse | str:
        if len(messages) == 1:
            return Scripted.tool_call("lookup", {"q": "\ud800"})
        return "seen: " + messages[0].content + "|" + messages[-1].content

    agent = agentdur.Agent(fresh("nul"), Scripted(script), [lookup])
    prompt = "hi\x00there \ud83d"
    answer = "seen: hi\x00there \ud83d|row\x00\ud800"
    assert rt.run_agent(agent, prompt, run_id="p1").output == answer
    assert rt.replay("p1")["output"] == answer
    tool_step = rt.steps("p1")[1]
    assert (tool_step.status, tool_step.output) == ("SUCCEEDED", "row\x00\ud800")
    with agentdur.Runtime(database_url, executor_id="other") as again:
        again.register(agent)
        assert again.handle("p1").result()["output"] == answer
        assert again.replay("p1")["output"] == answer


def test_messages_sent_with_nul_round_trip(rt: agentdur.Runtime) -> None:
    @agentdur.workflow(name=fresh("recv"))
    async def wf() -> Any:
        return await agentdur.recv("topic", timeout=30)

    handle = rt.start(wf, run_id="m1")
    rt.send("m1", "topic", {"v": "a\x00\udfff"})
    assert handle.result(timeout=10) == {"v": "a\x00\udfff"}


# -- item 8: a cap per recorded value ----------------------------------------------------


@pytest.fixture
def small(database_url: str) -> Any:
    with agentdur.Runtime(database_url, executor_id="small", max_value_bytes=1000) as runtime:
        yield runtime


def test_a_step_output_over_the_cap_names_the_step(small: agentdur.Runtime) -> None:
    calls = []

    @agentdur.step(name="big", retries=2, backoff=0.0)
    def big() -> str:
        calls.append(1)
        return "x" * 2000

    @agentdur.workflow(name=fresh("big"))
    def wf() -> str:
        return big()

    with pytest.raises(agentdur.ValueTooLarge) as caught:
        small.run(wf, run_id="b1")
    assert str(caught.value) == (
        "cannot store the output of step 0 'big': it is 2,002 bytes as JSON, over the limit "
        "of 1,000 bytes per recorded value (Runtime(max_value_bytes=...))"
    )
    assert calls == [1]
    assert small.get_run("b1").status == "FAILED"


def test_step_arguments_and_workflow_input_over_the_cap(small: agentdur.Runtime) -> None:
    @agentdur.step(name="take")
    def take(value: str) -> int:
        return len(value)

    name = fresh("args")

    @agentdur.workflow(name=name)
    def wf(size: int) -> int:
        return take("é" * size)

    with pytest.raises(agentdur.ValueTooLarge) as caught:
        small.run(wf, 600, run_id="a1")
    assert str(caught.value) == (
        "cannot store the input of step 0 'take': it is 1,213 bytes as JSON, over the limit "
        "of 1,000 bytes per recorded value (Runtime(max_value_bytes=...))"
    )
    with pytest.raises(agentdur.ValueTooLarge) as started:
        small.run(wf, int("9" * 1001), run_id="a2")
    assert str(started.value).startswith(f"cannot store the input of workflow {name!r}: it is ")
    assert small.store.get_run("a2") is None  # nothing written


def test_a_message_over_the_cap_is_refused_before_it_is_sent(small: agentdur.Runtime) -> None:
    with pytest.raises(agentdur.ValueTooLarge) as caught:
        small.send("nobody", "t", "y" * 1000)
    assert str(caught.value) == (
        "cannot store the message on topic 't': it is 1,002 bytes as JSON, over the limit "
        "of 1,000 bytes per recorded value (Runtime(max_value_bytes=...))"
    )


def test_an_llm_response_over_the_cap_names_the_step(small: agentdur.Runtime) -> None:
    agent = agentdur.Agent(fresh("llm"), Scripted(["z" * 3000]))
    with pytest.raises(agentdur.ValueTooLarge) as caught:
        small.run_agent(agent, "hi", run_id="l1")
    assert str(caught.value).startswith("cannot store the output of LLM step 0 'scripted': it is ")
    assert caught.value.limit == 1000
    assert small.get_run("l1").status == "FAILED"


def test_a_read_only_tool_result_over_the_cap_is_a_tool_error_the_model_sees(
    small: agentdur.Runtime,
) -> None:
    @agentdur.tool(effect="read_only")
    def fetch() -> str:
        """Fetch."""
        return "r" * 2000

    seen: list[str] = []

    def script(messages: list[Any], info: Any) -> ModelResponse | str:
        if len(messages) == 1:
            return Scripted.tool_call("fetch", {})
        seen.append(messages[-1].content)
        return "done"

    agent = agentdur.Agent(fresh("ro"), Scripted(script), [fetch])
    assert small.run_agent(agent, "go", run_id="t1").output == "done"
    assert seen == [
        "Error: ValueTooLarge: cannot store the result of tool step 1 'fetch': it is 2,002 "
        "bytes as JSON, over the limit of 1,000 bytes per recorded value "
        "(Runtime(max_value_bytes=...))"
    ]
    assert small.steps("t1")[1].status == "ERROR"
    assert small.replay("t1")["output"] == "done"


def test_a_side_effect_tool_result_over_the_cap_is_recorded_as_done_without_it(
    small: agentdur.Runtime,
) -> None:
    charged = []

    @agentdur.tool(effect="side_effect", key="charge:{order}")
    def charge(order: str) -> str:
        """Charge."""
        charged.append(order)
        return "receipt " * 300

    def script(messages: list[Any], info: Any) -> ModelResponse | str:
        if len(messages) == 1:
            return Scripted.tool_call("charge", {"order": "A1"})
        return "ok"

    agent = agentdur.Agent(fresh("se"), Scripted(script), [charge])
    assert small.run_agent(agent, "go", run_id="e1").output == "ok"
    step = small.steps("e1")[1]
    assert step.status == "SUCCEEDED"
    assert step.output == {
        "result_not_recorded": "cannot store the result of tool step 1 'charge': it is 2,402 "
        "bytes as JSON, over the limit of 1,000 bytes per recorded value "
        "(Runtime(max_value_bytes=...))"
    }
    assert charged == ["A1"]


def test_max_value_bytes_is_checked() -> None:
    with pytest.raises(agentdur.UsageError, match=r"^max_value_bytes must be at least 1, got 0$"):
        agentdur.Runtime("sqlite:///:memory:", max_value_bytes=0)


# -- item 9: unknown options ------------------------------------------------------------


def _noop() -> None:
    """Nothing."""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: agentdur.tool(requires_aproval=True),
            "tool() got an unknown option 'requires_aproval': did you mean 'requires_approval'?",
        ),
        (
            lambda: agentdur.tool(_noop, efect="read_only"),
            "tool() got an unknown option 'efect': did you mean 'effect'?",
        ),
        (
            lambda: agentdur.tool(reconcile=_noop),
            "tool() got an unknown option 'reconcile': register the hook on the tool: "
            "`@my_tool.reconcile`",
        ),
        (
            lambda: agentdur.Tool(_noop, transactonal=True),
            "Tool() got an unknown option 'transactonal': did you mean 'transactional'?",
        ),
        (
            lambda: agentdur.step(retrys=3),
            "step() got an unknown option 'retrys': did you mean 'retries'?",
        ),
        (
            lambda: agentdur.workflow(nmae="x"),
            "workflow() got an unknown option 'nmae': did you mean 'name'?",
        ),
        (
            lambda: agentdur.Agent("a", Scripted(["x"]), max_turn=3),
            "Agent() got an unknown option 'max_turn': did you mean 'max_turns'?",
        ),
        (
            lambda: agentdur.Queue("q", concurency=2),
            "Queue() got an unknown option 'concurency': did you mean 'concurrency'?",
        ),
        (
            lambda: agentdur.Runtime("sqlite:///:memory:", lease=3),
            "Runtime() got an unknown option 'lease': did you mean 'lease_seconds'?",
        ),
    ],
)
def test_an_unknown_option_names_the_closest_valid_one(make: Any, message: str) -> None:
    with pytest.raises(agentdur.UsageError) as caught:
        make()
    assert str(caught.value) == message


def test_an_unknown_option_like_none_lists_the_valid_ones() -> None:
    with pytest.raises(agentdur.UsageError) as caught:
        agentdur.Queue("q", zzz=3)
    assert str(caught.value) == (
        "Queue() got an unknown option 'zzz': valid options: 'concurrency', 'name', "
        "'rate_limit', 'worker_concurrency'"
    )


def test_valid_options_still_work() -> None:
    @agentdur.tool(effect="read_only", requires_approval=False, name="fine_tool")
    def fine() -> None:
        """Fine."""

    assert (fine.name, fine.effect) == ("fine_tool", "read_only")
    assert agentdur.Queue(fresh("q"), concurrency=2).concurrency == 2
