"""Scripted: the offline model for demos and tests."""

from __future__ import annotations

import pytest

from agentdur.errors import ConfigurationError
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    Scripted,
    ScriptInfo,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    ToolDefinition,
    UserMessage,
)

pytestmark = pytest.mark.anyio

HI = [UserMessage(content="hi")]
LOOKUP = ToolDefinition(name="lookup", description="Look up.", parameters={"type": "object"})


async def test_list_is_played_by_turn_then_runs_out() -> None:
    model = Scripted([Scripted.tool_call("lookup", {"q": "x"}), "All done."])

    first = await model.request(HI, [LOOKUP])
    after_first = [*HI, AssistantMessage.from_response(first)]
    second = await model.request(after_first, [LOOKUP])
    # A fresh instance (a restarted process) answers the same turn the same way.
    assert (await Scripted(["a", "b"]).request(after_first, [])).text == "b"

    assert (first.stop_reason, first.tool_calls[0].name) == ("tool_calls", "lookup")
    assert first.tool_calls[0].arguments == {"q": "x"}
    assert (second.text, second.stop_reason, second.tool_calls) == ("All done.", "end_turn", [])
    assert (first.raw, second.model) == (None, "scripted")
    with pytest.raises(ConfigurationError) as caught:
        await model.request([*after_first, AssistantMessage.from_response(second)], [])
    assert str(caught.value) == (
        "Scripted model ran out of responses after 2: it was asked for response 3; "
        "add more responses to the script"
    )


async def test_responses_are_copies() -> None:
    canned = ModelResponse(text="same")
    model = Scripted([canned, canned])
    first = await model.request(HI, [])
    first.tool_calls.append(Scripted.tool_call("x", {}).tool_calls[0])
    second = await model.request([*HI, AssistantMessage(content="same")], [])
    assert second.tool_calls == []


async def test_function_gets_messages_and_info() -> None:
    seen: list[tuple[int, list[str], int]] = []

    def script(messages: list[Message], info: ScriptInfo) -> str:
        seen.append((len(messages), [t.name for t in info.tools], info.call_index))
        return f"answer {info.call_index}"

    model = Scripted(script, model_name="demo")
    first = await model.request(HI, [LOOKUP])
    second = await model.request([*HI, AssistantMessage(content="a"), *HI], [])
    assert (first.text, second.text, second.model) == ("answer 0", "answer 1", "demo")
    assert seen == [(1, ["lookup"], 0), (3, [], 1)]


async def test_async_function_and_bad_return() -> None:
    async def script(messages: list[Message], info: ScriptInfo) -> ModelResponse:
        return Scripted.tool_calls([("a", {"n": 1}), ("b", {"n": 2})], text="two calls")

    response = await Scripted(script).request(HI, [])
    assert [c.name for c in response.tool_calls] == ["a", "b"]
    assert response.text == "two calls"
    assert len({c.id for c in response.tool_calls}) == 2

    with pytest.raises(ConfigurationError, match="must be a ModelResponse or a str, got int"):
        await Scripted(lambda messages, info: 42).request(HI, [])  # type: ignore[arg-type, return-value]


def test_tool_call_ids_are_deterministic_and_overridable() -> None:
    assert Scripted.tool_call("a", {"n": 1}) == Scripted.tool_call("a", {"n": 1})
    assert Scripted.tool_call("a", {"n": 1}).tool_calls[0].id != (
        Scripted.tool_call("a", {"n": 2}).tool_calls[0].id
    )
    call = Scripted.tool_call("a", {"n": 1}, id="call_fixed").tool_calls[0]
    assert (call.id, call.raw_arguments) == ("call_fixed", '{"n": 1}')


async def test_stream_yields_words_tool_calls_then_done() -> None:
    response = ModelResponse(
        text="Refund issued for order 7.",
        tool_calls=Scripted.tool_call("refund", {"order": 7}).tool_calls,
        stop_reason="tool_calls",
    )
    events = [e async for e in Scripted([response]).stream(HI, [])]

    words = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(words) == 5
    assert "".join(words) == "Refund issued for order 7."
    call = response.tool_calls[0]
    assert ToolCallStarted(0, call.id, "refund") in events
    assert ToolCallDelta(0, '{"order": 7}') in events
    assert isinstance(events[-1], StreamDone)
    assert events[-1].response.tool_calls == response.tool_calls


async def test_delay_sleeps_before_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("agentdur.models.scripted.asyncio.sleep", fake_sleep)
    await Scripted(["ok"], delay=0.25).request(HI, [])
    await Scripted(["ok"]).request(HI, [])
    assert slept == [0.25]


async def test_parse_raw_and_describe() -> None:
    model = Scripted(["hello"], model_name="demo")
    response = await model.request(HI, [])
    assert Scripted.parse_raw(response.model_dump(mode="json")) == response
    assert model.describe() == {"provider": "scripted", "model": "demo", "params": {}}
    assert model.with_model("other").describe()["model"] == "other"
