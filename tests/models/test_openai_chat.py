"""OpenAIChat against recorded Chat Completions responses, through the real SDK."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

from agentdur.errors import ConfigurationError, ModelHTTPError
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    OpenAIChat,
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
from agentdur.testing import openai_client

if TYPE_CHECKING:
    from conftest import Recorded

URL = "https://api.openai.com/v1/chat/completions"
WEATHER = ToolDefinition(
    name="get_current_weather",
    description="Get the current weather in a given location",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}},
)

pytestmark = pytest.mark.anyio


def chat(router: respx.Router, model: str = "gpt-4o-mini", **params: Any) -> OpenAIChat:
    return OpenAIChat(model, client=openai_client(router), **params)


async def collect(model: OpenAIChat, messages: list[Any], tools: list[ToolDefinition]) -> list[Any]:
    return [event async for event in model.stream(messages, tools)]


async def test_text_answer(router: respx.Router, recorded: Recorded) -> None:
    route = recorded.serve(router, "openai_chat_text")
    response = await chat(router).request([UserMessage(content="Say this is a test")], [])

    assert response.text == "This is a test."
    assert response.tool_calls == []
    assert response.stop_reason == "end_turn"
    assert response.usage == Usage(input_tokens=12, output_tokens=5)
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.raw == recorded.body("openai_chat_text")
    assert recorded.sent(route) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say this is a test"}],
    }


async def test_single_tool_call_and_request_as_recorded(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    name = "openai_chat_tool_call"
    route = recorded.serve(router, name)
    asked = recorded.request(name)["body"]
    model = chat(router)

    response = await model.request(
        [UserMessage(content=asked["messages"][0]["content"])], recorded.tools(name)
    )

    assert response.tool_calls == [
        ToolCall(
            id="call_TTY8UFNo7rNCaOBUNtlRSvMG",
            name="lookup_population",
            arguments={"country": "Crumpet"},
            raw_arguments='{"country":"Crumpet"}',
        )
    ]
    assert response.stop_reason == "tool_calls"
    assert response.text is None
    sent = recorded.sent(route)
    asked.pop("stream")  # we leave the API default
    assert sent == asked


async def test_parallel_tool_calls_keep_order(router: respx.Router, recorded: Recorded) -> None:
    name = "openai_chat_tool_calls_parallel"
    route = recorded.serve(router, name)
    asked = recorded.request(name)["body"]
    model = chat(router, tool_choice="auto")
    messages: list[Message] = [
        SystemMessage(content="You're a helpful assistant."),
        UserMessage(content="What's the weather in Seattle and San Francisco today?"),
    ]

    response = await model.request(messages, recorded.tools(name))

    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_JpNb8OiAkbIbHzDggfpdDHpi", "get_current_weather", {"location": "Seattle, WA"}),
        ("call_vaFQc3zK6hHTRZKXRI5Eo2cJ", "get_current_weather", {"location": "San Francisco, CA"}),
    ]
    assert response.usage.total_tokens == 126
    assert recorded.sent(route) == asked


async def test_length_is_max_tokens(router: respx.Router, recorded: Recorded) -> None:
    recorded.serve(router, "openai_chat_finish_length")
    response = await chat(router, max_tokens=10).request([UserMessage(content="story")], [])
    assert response.stop_reason == "max_tokens"
    assert response.text == "**Title: The Last Ember of Eldoria**\n\n"


async def test_refusal(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("openai_chat_text")  # built: the recorded body with a refusal
    body["choices"][0]["message"].update(content=None, refusal="I can't help with that.")
    recorded.serve(router, "openai_chat_text", body=body)
    response = await chat(router).request([UserMessage(content="x")], [])
    assert response.stop_reason == "refusal"
    assert response.refusal == "I can't help with that."
    assert response.text is None


@pytest.mark.parametrize(
    "name",
    [
        "openai_chat_text",
        "openai_chat_tool_call",
        "openai_chat_tool_calls_parallel",
        "openai_chat_finish_length",
    ],
)
async def test_parse_raw_rebuilds_the_response(
    router: respx.Router,
    recorded: Recorded,
    name: str,
) -> None:
    recorded.serve(router, name)
    response = await chat(router).request([UserMessage(content="x")], [])
    assert OpenAIChat.parse_raw(response.raw or {}) == response
    assert ModelResponse.model_validate(response.model_dump(mode="json")) == response


async def test_malformed_tool_arguments_are_kept_not_raised(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    body = recorded.body("openai_chat_tool_call")  # built: arguments cut off mid-string
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"country": "Cru'
    recorded.serve(router, "openai_chat_tool_call", body=body)
    response = await chat(router).request([UserMessage(content="x")], [])
    (call,) = response.tool_calls
    assert call.arguments == {}
    assert call.raw_arguments == '{"country": "Cru'
    assert call.name == "lookup_population"


async def test_odd_bodies_do_not_raise(router: respx.Router) -> None:
    router.post(URL).mock(
        side_effect=[
            httpx.Response(200, json={}),
            httpx.Response(200, json={"choices": [{"index": 0, "message": {}}]}),
        ]
    )
    model = chat(router)
    empty = await model.request([UserMessage(content="x")], [])
    assert (empty.text, empty.tool_calls, empty.stop_reason) == (None, [], "other")
    bare = await model.request([UserMessage(content="x")], [])
    assert (bare.text, bare.tool_calls, bare.stop_reason) == (None, [], "end_turn")


async def test_multi_turn_request_body(router: respx.Router, recorded: Recorded) -> None:
    route = recorded.serve(router, "openai_chat_text")
    seattle = ToolCall.from_raw("call_1", "get_current_weather", '{"location": "Seattle, WA"}')
    paris = ToolCall.from_arguments("call_2", "get_current_weather", {"location": "Paris"})
    messages: list[Message] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Weather in Seattle and Paris?"),
        AssistantMessage(content=None, tool_calls=[seattle, paris]),
        ToolResultMessage(tool_call_id="call_1", name="get_current_weather", content="rain"),
        ToolResultMessage(
            tool_call_id="call_2", name="get_current_weather", content="boom", is_error=True
        ),
        AssistantMessage(content="Rain in Seattle; Paris failed."),
        UserMessage(content="Thanks"),
    ]

    await chat(router, temperature=0.2).request(messages, [WEATHER])

    assert recorded.sent(route) == {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Seattle and Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{"location": "Seattle, WA"}',
                        },
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{"location": "Paris"}',
                        },
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_2", "content": "boom"},
            {"role": "assistant", "content": "Rain in Seattle; Paris failed."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
    }


async def test_extra_body_fields_go_into_the_body(router: respx.Router, recorded: Recorded) -> None:
    route = recorded.serve(router, "openai_chat_text")
    model = chat(router, extra_body={"top_k": 5, "repetition_penalty": 1.1})
    await model.request([UserMessage(content="x")], [])
    sent = recorded.sent(route)
    assert sent["top_k"] == 5
    assert sent["repetition_penalty"] == 1.1
    assert model.describe()["params"] == {"extra_body": {"top_k": 5, "repetition_penalty": 1.1}}


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("openai_chat_error_400_invalid_request", 400),
        ("openai_chat_error_404_model_not_found", 404),
    ],
)
async def test_recorded_errors_are_not_retryable(
    router: respx.Router,
    recorded: Recorded,
    name: str,
    status: int,
) -> None:
    recorded.serve(router, name)
    with pytest.raises(ModelHTTPError) as caught:
        await chat(router).request([UserMessage(content="x")], [])
    error = caught.value
    assert (error.status_code, error.retryable, error.retry_after) == (status, False, None)
    assert recorded.body(name)["error"]["message"] in str(error)
    assert error.body == recorded.body(name)


async def test_429_is_retryable_with_retry_after(router: respx.Router) -> None:
    body = {  # built: the message text real 429s carry (SOURCES.md), no recording exists
        "error": {
            "message": "Rate limit reached for gpt-4.1 in organization org-x on tokens per min",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    router.post(URL).respond(429, json=body, headers={"retry-after": "2"})
    with pytest.raises(ModelHTTPError) as caught:
        await chat(router).request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (429, True)
    assert caught.value.retry_after == 2.0
    assert "Rate limit reached" in str(caught.value)


async def test_sdk_retries_are_off_even_if_the_client_has_them(router: respx.Router) -> None:
    route = router.post(URL).respond(500, json={"error": {"message": "boom", "type": "server"}})
    model = OpenAIChat("gpt-4o-mini", client=openai_client(router, max_retries=5))
    with pytest.raises(ModelHTTPError) as caught:
        await model.request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (500, True)
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("effect", "words"),
    [(httpx.ReadTimeout, "timed out"), (httpx.ConnectError, "connection failed")],
)
async def test_transport_failures_are_retryable_without_status(
    router: respx.Router,
    effect: type[Exception],
    words: str,
) -> None:
    route = router.post(URL).mock(side_effect=effect)
    with pytest.raises(ModelHTTPError) as caught:
        await chat(router).request([UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (None, True)
    assert words in str(caught.value)
    assert route.call_count == 1


async def test_stream_text_with_usage(router: respx.Router, recorded: Recorded) -> None:
    route = recorded.serve(router, "openai_chat_stream_text_usage")
    events = await collect(chat(router), [UserMessage(content="Say this is a test")], [])

    done = events[-1]
    assert isinstance(done, StreamDone)
    assert not any(isinstance(e, StreamDone) for e in events[:-1])
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 5
    assert "".join(deltas) == done.response.text == "This is a test. How can I assist you today?"
    assert done.response.usage == Usage(input_tokens=12, output_tokens=12)
    assert done.response.stop_reason == "end_turn"
    assert OpenAIChat.parse_raw(done.response.raw or {}) == done.response
    sent = recorded.sent(route)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_parallel_tool_calls(router: respx.Router, recorded: Recorded) -> None:
    recorded.serve(router, "openai_chat_stream_tool_calls_parallel")
    events = await collect(chat(router), [UserMessage(content="weather?")], [WEATHER])

    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert [(e.index, e.id, e.name) for e in started] == [
        (0, "call_fHCjJqt9Pysde6vcJcvbXGBx", "get_current_weather"),
        (1, "call_3J9foSw3CUb48lrqIXoTky6U", "get_current_weather"),
    ]
    final = events[-1].response
    for index, call in enumerate(final.tool_calls):
        deltas = [e for e in events if isinstance(e, ToolCallDelta) and e.index == index]
        assert len(deltas) > 3
        assert "".join(e.arguments_delta for e in deltas) == call.raw_arguments
    # The same prompt answered without streaming (another recording) parses the same way.
    twin = OpenAIChat.parse_raw(recorded.body("openai_chat_tool_calls_parallel"))
    assert [(c.name, c.arguments) for c in final.tool_calls] == [
        (c.name, c.arguments) for c in twin.tool_calls
    ]
    assert (final.stop_reason, final.usage) == (twin.stop_reason, twin.usage)
    assert OpenAIChat.parse_raw(final.raw or {}) == final
    assert final.raw is not None and final.raw["object"] == "chat.completion"


async def test_stream_error_status_is_mapped(router: respx.Router, recorded: Recorded) -> None:
    recorded.serve(router, "openai_chat_error_404_model_not_found")
    with pytest.raises(ModelHTTPError) as caught:
        await collect(chat(router), [UserMessage(content="x")], [])
    assert (caught.value.status_code, caught.value.retryable) == (404, False)


async def test_no_key_or_header_in_raw_or_describe(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    route = recorded.serve(router, "openai_chat_text")
    client = openai_client(router, api_key="sk-live-SECRET123")
    model = OpenAIChat("gpt-4o-mini", client=client, temperature=0)
    response = await model.request([UserMessage(content="x")], [])

    assert route.calls.last.request.headers["authorization"] == "Bearer sk-live-SECRET123"
    stored = json.dumps([response.model_dump(mode="json"), model.describe()]).lower()
    assert "secret123" not in stored
    assert "authorization" not in stored and "bearer" not in stored
    assert model.describe() == {
        "provider": "openai_chat",
        "model": "gpt-4o-mini",
        "params": {"temperature": 0},
    }


async def test_with_model_switches_model_and_keeps_client(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    route = recorded.serve(router, "openai_chat_text")
    model = chat(router, temperature=0.5, rate_limit="team-limit")
    other = model.with_model("gpt-4.1")
    await other.request([UserMessage(content="x")], [])
    assert recorded.sent(route)["model"] == "gpt-4.1"
    assert other.describe()["params"] == {"temperature": 0.5}
    assert (model.model_name, other.rate_limit) == ("gpt-4o-mini", "team-limit")


async def test_client_is_built_lazily_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIChat("gpt-4o-mini")  # no key needed to construct
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        await model.request([UserMessage(content="x")], [])
