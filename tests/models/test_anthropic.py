"""AnthropicMessages against recorded Messages API payloads, through the real SDK."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

from agentdur.errors import ConfigurationError, ModelHTTPError
from agentdur.models import (
    AnthropicMessages,
    AssistantMessage,
    Message,
    ModelResponse,
    StreamDone,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStarted,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentdur.testing import anthropic_client

if TYPE_CHECKING:
    from conftest import Recorded

URL = "https://api.anthropic.com/v1/messages"
# The real 529 body quoted in SOURCES.md (anthropics/claude-code#35792); no recording exists.
OVERLOADED = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
    "request_id": "req_011CZAau32QzxDkriovTaFCB",
}
SEARCH = ToolDefinition(
    name="search", description="Search.", parameters={"type": "object", "properties": {}}
)

pytestmark = pytest.mark.anyio


def claude(
    router: respx.Router, model: str = "claude-sonnet-4-0", **params: Any
) -> AnthropicMessages:
    return AnthropicMessages(model, client=anthropic_client(router), **params)


async def collect(model: AnthropicMessages, messages: list[Any], tools: list[Any]) -> list[Any]:
    return [event async for event in model.stream(messages, tools)]


async def test_text_answer(router: respx.Router, recorded: Recorded) -> None:
    name = "anthropic_messages_text"
    route = recorded.serve(router, name)
    response = await claude(router).request([UserMessage(content="Say hello")], [])

    assert response.text == "Hello! It's nice to meet you. How are you doing today?"
    assert (response.stop_reason, response.tool_calls) == ("end_turn", [])
    assert response.usage == Usage(input_tokens=9, output_tokens=18)
    assert response.model == "claude-sonnet-4-20250514"
    assert response.raw == recorded.body(name)
    expected = recorded.request(name)["body"]
    expected.pop("stream", None)
    assert recorded.sent(route) == expected


async def test_parallel_tool_use_and_request_as_recorded(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    name = "anthropic_messages_tool_use_parallel"
    route = recorded.serve(router, name)
    asked = recorded.request(name)["body"]
    model = claude(router, "claude-sonnet-4-6", stop_sequences=["\nObservation:"])
    messages: list[Message] = [
        SystemMessage(content=asked["system"]),
        UserMessage(content=asked["messages"][0]["content"]),
    ]

    response = await model.request(messages, recorded.tools(name))

    assert response.text == "I'll execute all 3 parallel searches simultaneously right now!"
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        (
            "toolu_01NwzvrxEz6tvT3A8ydvMtHu",
            "parallel_local_search_one",
            {"query": "latest OpenAI model release notes"},
        ),
        (
            "toolu_01YCxzSB1suk9uPVC1uwfHz9",
            "parallel_local_search_two",
            {"query": "latest Anthropic model release notes"},
        ),
        (
            "toolu_01Mauvxzv58eDY7pUt9HMKGy",
            "parallel_local_search_three",
            {"query": "latest Gemini model release notes"},
        ),
    ]
    assert json.loads(response.tool_calls[0].raw_arguments) == response.tool_calls[0].arguments
    assert response.stop_reason == "tool_calls"
    asked.pop("stream")
    assert recorded.sent(route) == asked


async def test_max_tokens(router: respx.Router, recorded: Recorded) -> None:
    name = "anthropic_messages_max_tokens"
    route = recorded.serve(router, name)
    response = await AnthropicMessages(
        "claude-sonnet-4-0", client=anthropic_client(router), max_tokens=10
    ).request([UserMessage(content="Write a very long story about a dragon.")], [])
    assert response.stop_reason == "max_tokens"
    assert response.text == "# The Last Song of Vaelthys"
    assert recorded.sent(route)["max_tokens"] == 10


async def test_cache_tokens_count_as_input(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("anthropic_messages_text")  # built: cache counters filled in
    body["usage"].update(cache_read_input_tokens=100, cache_creation_input_tokens=20)
    recorded.serve(router, "anthropic_messages_text", body=body)
    response = await claude(router).request([UserMessage(content="x")], [])
    assert response.usage == Usage(
        input_tokens=129, output_tokens=18, cache_read_tokens=100, cache_write_tokens=20
    )


async def test_refusal(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("anthropic_messages_text")  # built: the refusal stop reason
    body.update(stop_reason="refusal", content=[{"type": "text", "text": "I can't."}])
    recorded.serve(router, "anthropic_messages_text", body=body)
    response = await claude(router).request([UserMessage(content="x")], [])
    assert (response.stop_reason, response.refusal) == ("refusal", "I can't.")


@pytest.mark.parametrize(
    "name",
    [
        "anthropic_messages_text",
        "anthropic_messages_tool_use_parallel",
        "anthropic_messages_max_tokens",
    ],
)
async def test_parse_raw_rebuilds_the_response(
    router: respx.Router,
    recorded: Recorded,
    name: str,
) -> None:
    recorded.serve(router, name)
    response = await claude(router).request([UserMessage(content="x")], [])
    assert AnthropicMessages.parse_raw(response.raw or {}) == response
    assert ModelResponse.model_validate(response.model_dump(mode="json")) == response


async def test_tool_results_merge_into_one_user_message(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    route = recorded.serve(router, "anthropic_messages_text")
    one = ToolCall.from_arguments("toolu_1", "search", {"query": "a"})
    two = ToolCall.from_arguments("toolu_2", "search", {"query": "b"})
    messages: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Search a and b"),
        AssistantMessage(content="Searching.", tool_calls=[one, two]),
        ToolResultMessage(tool_call_id="toolu_1", name="search", content="A"),
        ToolResultMessage(tool_call_id="toolu_2", name="search", content="no", is_error=True),
        UserMessage(content="Summarise"),
        AssistantMessage(content=None),  # an empty turn is dropped: the API rejects it
        SystemMessage(content="Use English."),
    ]

    await claude(router, temperature=0.3).request(messages, [SEARCH])

    assert recorded.sent(route) == {
        "model": "claude-sonnet-4-0",
        "max_tokens": 4096,
        "temperature": 0.3,
        "system": "Be brief.\n\nUse English.",
        "messages": [
            {"role": "user", "content": "Search a and b"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Searching."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "search",
                        "input": {"query": "a"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "search",
                        "input": {"query": "b"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "no",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Summarise"},
                ],
            },
        ],
        "tools": [{"name": "search", "description": "Search.", "input_schema": SEARCH.parameters}],
    }


async def test_recorded_400_is_not_retryable(router: respx.Router, recorded: Recorded) -> None:
    name = "anthropic_messages_error_400_invalid_request"
    recorded.serve(router, name)
    with pytest.raises(ModelHTTPError) as caught:
        await claude(router).request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (400, False)
    assert "messages.0: Input does not match the expected shape." in str(caught.value)
    assert caught.value.body == recorded.body(name)


async def test_529_overloaded_is_retryable(router: respx.Router) -> None:
    route = router.post(URL).respond(529, json=OVERLOADED)
    model = AnthropicMessages("claude-sonnet-4-0", client=anthropic_client(router, max_retries=4))
    with pytest.raises(ModelHTTPError) as caught:
        await model.request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (529, True)
    assert "Overloaded" in str(caught.value)
    assert caught.value.body == OVERLOADED
    assert route.call_count == 1  # SDK retries are off


async def test_429_retry_after(router: respx.Router) -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    router.post(URL).respond(429, json=body, headers={"retry-after": "2"})
    with pytest.raises(ModelHTTPError) as caught:
        await claude(router).request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (429, True)
    assert caught.value.retry_after == 2.0


async def test_timeout_is_retryable_without_status(router: respx.Router) -> None:
    router.post(URL).mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ModelHTTPError, match="timed out") as caught:
        await claude(router).request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (None, True)


async def test_stream_tool_use(router: respx.Router, recorded: Recorded) -> None:
    name = "anthropic_messages_stream_tool_use"
    route = recorded.serve(router, name)
    asked = recorded.request(name)["body"]
    model = claude(router, "claude-3-5-sonnet-20240620", max_tokens=1024)

    events = await collect(
        model, [UserMessage(content=asked["messages"][0]["content"])], recorded.tools(name)
    )

    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("Certainly! I can help you with that information.")
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.index, e.name) for e in started] == [(0, "get_weather"), (1, "get_time")]
    done = events[-1]
    assert isinstance(done, StreamDone)
    final = done.response
    assert final.text == text
    assert [(c.id, c.arguments) for c in final.tool_calls] == [
        ("toolu_014x5X91kx3fvdhpLvwXZWE2", {"location": "San Francisco, CA", "unit": "celsius"}),
        ("toolu_0121kXsENLvoDZ72LCuAnCCz", {"timezone": "America/Los_Angeles"}),
    ]
    for index, call in enumerate(final.tool_calls):
        pieces = [
            e.arguments_delta for e in events if isinstance(e, ToolCallDelta) and e.index == index
        ]
        assert json.loads("".join(pieces)) == call.arguments
    assert (final.stop_reason, final.usage) == (
        "tool_calls",
        Usage(input_tokens=506, output_tokens=153),
    )
    assert AnthropicMessages.parse_raw(final.raw or {}) == final
    assert recorded.sent(route) == asked


async def test_stream_text_sends_temperature_in_body(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    # anthropic 2.13's messages.stream() has no `temperature`: it goes through extra_body.
    name = "anthropic_messages_stream_text"
    route = recorded.serve(router, name)
    model = claude(router, "claude-haiku-4-5-20251001", temperature=1.0)
    events = await collect(model, [UserMessage(content="Say just hello")], [])
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("Hello")]
    assert events[-1].response.text == "Hello"
    assert events[-1].response.stop_reason == "end_turn"
    assert recorded.sent(route)["temperature"] == 1.0


async def test_overloaded_error_inside_a_stream(router: respx.Router, recorded: Recorded) -> None:
    # built: the recorded stream cut by the real overloaded error event
    head = recorded.sse("anthropic_messages_stream_text").split(b"event: content_block_stop")[0]
    error = b"event: error\ndata: " + json.dumps(OVERLOADED).encode() + b"\n\n"
    router.post(URL).respond(
        200, content=head + error, headers={"content-type": "text/event-stream"}
    )
    with pytest.raises(ModelHTTPError) as caught:
        await collect(claude(router), [UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (529, True)


async def test_describe_includes_max_tokens_not_the_key(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    recorded.serve(router, "anthropic_messages_text")
    client = anthropic_client(router, api_key="sk-ant-SECRET7")
    model = AnthropicMessages("claude-sonnet-4-0", client=client, max_tokens=512, top_k=3)
    response = await model.request([UserMessage(content="x")], [])
    assert model.describe() == {
        "provider": "anthropic_messages",
        "model": "claude-sonnet-4-0",
        "params": {"top_k": 3, "max_tokens": 512},
    }
    stored = json.dumps([response.model_dump(mode="json"), model.describe()])
    assert "SECRET7" not in stored


async def test_missing_credentials_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    model = AnthropicMessages("claude-sonnet-4-0")
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        await model.request([UserMessage(content="x")], [])
