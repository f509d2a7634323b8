"""OpenAIResponses against recorded Responses API payloads, through the real SDK."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

from agentdur.errors import ModelHTTPError
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    OpenAIResponses,
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

URL = "https://api.openai.com/v1/responses"
MULTIPLY = ToolDefinition(
    name="multiply",
    description="Multiply two numbers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)

pytestmark = pytest.mark.anyio


def responses(router: respx.Router, model: str = "gpt-4o-mini", **params: Any) -> OpenAIResponses:
    return OpenAIResponses(model, client=openai_client(router), **params)


async def collect(model: OpenAIResponses, messages: list[Any], tools: list[Any]) -> list[Any]:
    return [event async for event in model.stream(messages, tools)]


async def test_text_answer_with_instructions(router: respx.Router, recorded: Recorded) -> None:
    name = "openai_responses_text"
    route = recorded.serve(router, name)
    messages: list[Message] = [
        SystemMessage(content="You are a helpful assistant."),
        UserMessage(content="Say this is a test"),
    ]
    response = await responses(router).request(messages, [])

    assert response.text == "This is a test."
    assert (response.stop_reason, response.tool_calls) == ("end_turn", [])
    assert response.usage == Usage(input_tokens=22, output_tokens=6)
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.raw == recorded.body(name)
    assert recorded.sent(route) == {
        "model": "gpt-4o-mini",
        "instructions": "You are a helpful assistant.",
        "input": [{"role": "user", "content": "Say this is a test"}],
    }


async def test_function_call_and_request_as_recorded(
    router: respx.Router,
    recorded: Recorded,
) -> None:
    name = "openai_responses_function_call"
    route = recorded.serve(router, name)
    tool_choice = {"type": "function", "name": "get_current_weather"}
    model = responses(router, tool_choice=tool_choice)

    response = await model.request(
        [UserMessage(content="What's the weather in Seattle right now?")], recorded.tools(name)
    )

    assert response.tool_calls == [
        ToolCall(
            id="call_90uO5LcGP5vTBTCrjyhYtWsA",
            name="get_current_weather",
            arguments={"location": "Seattle, WA"},
            raw_arguments='{"location":"Seattle, WA"}',
        )
    ]
    assert response.stop_reason == "tool_calls"
    expected = recorded.request(name)["body"]
    expected["input"] = [{"role": "user", "content": expected["input"]}]
    expected["tools"][0]["strict"] = False  # our schemas are not written for strict mode
    assert recorded.sent(route) == expected


async def test_parallel_function_calls_keep_order(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("openai_responses_function_call")  # built: a second call added
    second = copy.deepcopy(body["output"][0])
    second.update(id="fc_2", call_id="call_2", arguments='{"location":"Paris"}')
    body["output"].append(second)
    recorded.serve(router, "openai_responses_function_call", body=body)

    response = await responses(router).request([UserMessage(content="x")], [])

    assert [(c.id, c.arguments) for c in response.tool_calls] == [
        ("call_90uO5LcGP5vTBTCrjyhYtWsA", {"location": "Seattle, WA"}),
        ("call_2", {"location": "Paris"}),
    ]


async def test_incomplete_max_output_tokens(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("openai_responses_text")  # built: the documented incomplete shape
    body.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    recorded.serve(router, "openai_responses_text", body=body)
    response = await responses(router).request([UserMessage(content="x")], [])
    assert response.stop_reason == "max_tokens"
    assert response.text == "This is a test."


async def test_refusal_part(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("openai_responses_text")  # built: a refusal content part
    body["output"][0]["content"] = [{"type": "refusal", "refusal": "I can't help."}]
    recorded.serve(router, "openai_responses_text", body=body)
    response = await responses(router).request([UserMessage(content="x")], [])
    assert (response.stop_reason, response.refusal, response.text) == (
        "refusal",
        "I can't help.",
        None,
    )


@pytest.mark.parametrize("name", ["openai_responses_text", "openai_responses_function_call"])
async def test_parse_raw_rebuilds_the_response(
    router: respx.Router,
    recorded: Recorded,
    name: str,
) -> None:
    recorded.serve(router, name)
    response = await responses(router).request([UserMessage(content="x")], [])
    assert OpenAIResponses.parse_raw(response.raw or {}) == response
    assert ModelResponse.model_validate(response.model_dump(mode="json")) == response


async def test_malformed_arguments_are_kept(router: respx.Router, recorded: Recorded) -> None:
    body = recorded.body("openai_responses_function_call")
    body["output"][0]["arguments"] = '["Seattle"]'  # built: valid JSON, not an object
    recorded.serve(router, "openai_responses_function_call", body=body)
    response = await responses(router).request([UserMessage(content="x")], [])
    assert response.tool_calls[0].arguments == {}
    assert response.tool_calls[0].raw_arguments == '["Seattle"]'


async def test_multi_turn_input_items(router: respx.Router, recorded: Recorded) -> None:
    route = recorded.serve(router, "openai_responses_text")
    a = ToolCall.from_raw("call_a", "multiply", '{"a":2,"b":3}')
    b = ToolCall.from_raw("call_b", "multiply", '{"a":4,"b":5}')
    messages: list[Message] = [
        SystemMessage(content="Use tools."),
        SystemMessage(content="Be brief."),
        UserMessage(content="2*3 and 4*5?"),
        AssistantMessage(content="Calling.", tool_calls=[a, b]),
        ToolResultMessage(tool_call_id="call_a", name="multiply", content="6"),
        ToolResultMessage(tool_call_id="call_b", name="multiply", content="bad", is_error=True),
        SystemMessage(content="Answer in words."),
        UserMessage(content="And?"),
    ]

    await responses(router, store=False).request(messages, [MULTIPLY])

    assert recorded.sent(route) == {
        "model": "gpt-4o-mini",
        "store": False,
        "instructions": "Use tools.\n\nBe brief.",
        "input": [
            {"role": "user", "content": "2*3 and 4*5?"},
            {"role": "assistant", "content": "Calling."},
            {
                "type": "function_call",
                "call_id": "call_a",
                "name": "multiply",
                "arguments": '{"a":2,"b":3}',
            },
            {
                "type": "function_call",
                "call_id": "call_b",
                "name": "multiply",
                "arguments": '{"a":4,"b":5}',
            },
            {"type": "function_call_output", "call_id": "call_a", "output": "6"},
            {"type": "function_call_output", "call_id": "call_b", "output": "bad"},
            {"role": "system", "content": "Answer in words."},
            {"role": "user", "content": "And?"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "multiply",
                "description": "Multiply two numbers.",
                "parameters": MULTIPLY.parameters,
                "strict": False,
            }
        ],
    }


async def test_stream_function_call(router: respx.Router, recorded: Recorded) -> None:
    name = "openai_responses_stream_function_call"
    route = recorded.serve(router, name)
    model = responses(router, "gpt-5.5", reasoning={"effort": "low"}, store=False)

    events = await collect(model, [UserMessage(content="What is 1231 * 2331?")], [MULTIPLY])

    assert events[0] == ToolCallStarted(0, "call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply")
    deltas = [e.arguments_delta for e in events if isinstance(e, ToolCallDelta)]
    assert len(deltas) == 11
    assert "".join(deltas) == '{"a":1231,"b":2331}'
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.response.tool_calls == [
        ToolCall.from_raw("call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply", '{"a":1231,"b":2331}')
    ]
    assert done.response.stop_reason == "tool_calls"
    assert done.response.usage == Usage(input_tokens=58, output_tokens=23)
    assert OpenAIResponses.parse_raw(done.response.raw or {}) == done.response
    assert done.response.raw is not None and done.response.raw["status"] == "completed"
    sent = recorded.sent(route)
    assert (sent["stream"], sent["reasoning"], sent["store"]) == (True, {"effort": "low"}, False)


async def test_stream_text_deltas(router: respx.Router) -> None:
    # built from the recorded event shapes: a short text answer
    events: list[dict[str, Any]] = [
        {"type": "response.output_text.delta", "delta": "Hel", "output_index": 0},
        {"type": "response.output_text.delta", "delta": "lo", "output_index": 0},
        {
            "type": "response.completed",
            "response": {
                "object": "response",
                "status": "completed",
                "model": "gpt-4o-mini",
                "output": [
                    {"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}
                ],
            },
        },
    ]
    sse = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    router.post(URL).respond(200, text=sse, headers={"content-type": "text/event-stream"})
    got = await collect(responses(router), [UserMessage(content="hi")], [])
    assert got[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert got[-1].response.text == "Hello"


async def test_stream_error_event_is_mapped(router: respx.Router) -> None:
    error = {"type": "error", "code": "server_error", "message": "Something broke", "param": None}
    sse = f"event: error\ndata: {json.dumps(error)}\n\n"
    router.post(URL).respond(200, text=sse, headers={"content-type": "text/event-stream"})
    with pytest.raises(ModelHTTPError, match="Something broke") as caught:
        await collect(responses(router), [UserMessage(content="hi")], [])
    assert caught.value.retryable is True


async def test_errors_are_mapped(router: respx.Router, recorded: Recorded) -> None:
    # The recorded Chat 400 body: the Responses API uses the same error envelope.
    router.post(URL).mock(
        side_effect=[
            recorded.response("openai_chat_error_400_invalid_request"),
            httpx.Response(
                503,
                json={"error": {"message": "overloaded", "type": "server"}},
                headers={"retry-after-ms": "1500"},
            ),
            httpx.ConnectTimeout("timed out"),
        ]
    )
    model = responses(router)
    expected = [(400, False, None), (503, True, 1.5), (None, True, None)]
    for status, retryable, retry_after in expected:
        with pytest.raises(ModelHTTPError) as caught:
            await model.request([UserMessage(content="x")], [])
        assert (caught.value.status_code, caught.value.retryable) == (status, retryable)
        assert caught.value.retry_after == retry_after


async def test_no_key_in_raw_or_describe(router: respx.Router, recorded: Recorded) -> None:
    recorded.serve(router, "openai_responses_text")
    model = OpenAIResponses("gpt-4o-mini", client=openai_client(router, api_key="sk-SECRET9"))
    response = await model.request([UserMessage(content="x")], [])
    stored = json.dumps([response.model_dump(mode="json"), model.describe()])
    assert "SECRET9" not in stored
    assert model.describe() == {
        "provider": "openai_responses",
        "model": "gpt-4o-mini",
        "params": {},
    }
