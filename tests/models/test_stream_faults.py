"""Every adapter under transport faults, through the real SDKs and the respx bridge.

The streams are the recorded SSE bodies of tests/fixtures/providers, cut short, with one
event corrupted, or served by a body that drops or stalls part-way. Each fault must be a
retryable `ModelHTTPError` (the runtime retries it) and never a partial answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

from agentdur.errors import ModelHTTPError
from agentdur.models import (
    AnthropicMessages,
    Model,
    OpenAIChat,
    OpenAIResponses,
    StreamDone,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
    UserMessage,
)
from agentdur.models.base import SSEvent, iter_sse
from agentdur.testing import anthropic_client, openai_client

if TYPE_CHECKING:
    from conftest import Recorded

pytestmark = pytest.mark.anyio

SSE_TYPE = "text/event-stream; charset=utf-8"
PROMPT = [UserMessage(content="x")]


@dataclass(frozen=True)
class Adapter:
    make: Callable[..., Model]
    url: str
    fixture: str
    terminal: bytes
    """A byte string only found in the event that completes the answer."""


def _chat(router: respx.Router, **options: Any) -> Model:
    return OpenAIChat("gpt-4o-mini", client=openai_client(router), **options)


def _responses(router: respx.Router, **options: Any) -> Model:
    return OpenAIResponses("gpt-5.5", client=openai_client(router), **options)


def _anthropic(router: respx.Router, **options: Any) -> Model:
    return AnthropicMessages(
        "claude-3-5-sonnet-20240620", client=anthropic_client(router), max_tokens=1024, **options
    )


ADAPTERS = {
    "openai_chat": Adapter(
        _chat,
        "https://api.openai.com/v1/chat/completions",
        "openai_chat_stream_tool_calls_parallel",
        b'"finish_reason":"tool_calls"',
    ),
    "openai_responses": Adapter(
        _responses,
        "https://api.openai.com/v1/responses",
        "openai_responses_stream_function_call",
        b'"type":"response.completed"',
    ),
    "anthropic_messages": Adapter(
        _anthropic,
        "https://api.anthropic.com/v1/messages",
        "anthropic_messages_stream_tool_use",
        b'"type":"message_delta"',
    ),
}
TOOLS = [ToolDefinition(name="t", description="", parameters={"type": "object"})]


def events_of(body: bytes) -> list[bytes]:
    """The recorded body as its events (each without the blank line that ends it)."""
    return [event for event in body.split(b"\n\n") if event.strip()]


def joined(events: list[bytes]) -> bytes:
    return b"".join(event + b"\n\n" for event in events)


def before(events: list[bytes], marker: bytes) -> list[bytes]:
    """The events that come before the first one containing `marker`."""
    position = next(i for i, event in enumerate(events) if marker in event)
    return events[:position]


def sse_response(content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": SSE_TYPE}, content=content)


async def collect(model: Model) -> list[Any]:
    return [event async for event in model.stream(PROMPT, TOOLS)]


def assert_retryable(error: ModelHTTPError, *words: str) -> None:
    assert (error.status_code, error.retryable) == (None, True)
    for word in words:
        assert word in str(error)


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return ADAPTERS[request.param]


async def test_the_whole_recorded_stream_is_an_answer(
    router: respx.Router, recorded: Recorded, adapter: Adapter
) -> None:
    router.post(adapter.url).mock(return_value=sse_response(recorded.sse(adapter.fixture)))
    events = await collect(adapter.make(router))
    assert isinstance(events[-1], StreamDone)
    assert events[-1].response.tool_calls


@pytest.mark.parametrize("mid_event", [False, True], ids=["at_event", "mid_event"])
async def test_a_stream_without_its_terminal_event_is_retryable(
    router: respx.Router, recorded: Recorded, adapter: Adapter, mid_event: bool
) -> None:
    events = events_of(recorded.sse(adapter.fixture))
    kept = before(events, adapter.terminal)
    body = joined(kept)
    if mid_event:  # the connection closed inside the terminal event
        terminal = events[len(kept)]
        body += terminal[: len(terminal) // 2]
    router.post(adapter.url).mock(return_value=sse_response(body))
    seen: list[Any] = []
    with pytest.raises(ModelHTTPError) as caught:
        async for event in adapter.make(router).stream(PROMPT, TOOLS):
            seen.append(event)
    assert_retryable(caught.value, "ended early")
    assert not any(isinstance(e, StreamDone) for e in seen)
    assert any(isinstance(e, ToolCallDelta) for e in seen)  # it did stream, then stopped


async def test_a_corrupt_event_is_retryable(
    router: respx.Router, recorded: Recorded, adapter: Adapter
) -> None:
    events = events_of(recorded.sse(adapter.fixture))
    position = len(events) // 2
    events[position] = events[position].replace(b"data: {", b"data: {\x00broken", 1)
    router.post(adapter.url).mock(return_value=sse_response(joined(events)))
    with pytest.raises(ModelHTTPError) as caught:
        await collect(adapter.make(router))
    assert_retryable(caught.value, "corrupt stream event", "broken")
    assert not isinstance(caught.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (httpx.RemoteProtocolError, "connection failed: RemoteProtocolError"),
        (httpx.ReadError, "connection failed: ReadError"),
        (httpx.ReadTimeout, "timed out"),
    ],
)
async def test_a_stream_that_drops_is_retryable(
    router: respx.Router,
    recorded: Recorded,
    adapter: Adapter,
    fault: type[httpx.TransportError],
    words: str,
) -> None:
    events = events_of(recorded.sse(adapter.fixture))

    async def body() -> AsyncIterator[bytes]:
        for event in events[: len(events) // 2]:
            yield event + b"\n\n"
        raise fault("peer closed connection without sending complete message body")

    router.post(adapter.url).mock(return_value=sse_response(body()))
    with pytest.raises(ModelHTTPError) as caught:
        await collect(adapter.make(router))
    assert_retryable(caught.value, words)


async def test_a_stalled_stream_hits_the_idle_timeout(
    router: respx.Router, recorded: Recorded, adapter: Adapter
) -> None:
    events = events_of(recorded.sse(adapter.fixture))

    async def body() -> AsyncIterator[bytes]:
        for event in events[:3]:
            yield event + b"\n\n"
        await asyncio.Event().wait()  # the server goes silent
        yield b""

    route = router.post(adapter.url).mock(return_value=sse_response(body()))
    with pytest.raises(ModelHTTPError) as caught:
        await collect(adapter.make(router, idle_timeout=0.05))
    assert_retryable(caught.value, "timed out", "idle_timeout=0.05 s")
    assert route.calls.last.request.extensions["timeout"]["read"] == 0.05


async def test_an_unanswered_request_hits_the_request_timeout(adapter: Adapter) -> None:
    asked: list[httpx.Request] = []

    async def silent(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    router = respx.Router(assert_all_mocked=True)  # a cancelled route does not count as called
    router.post(adapter.url).mock(side_effect=silent)
    with pytest.raises(ModelHTTPError) as caught:
        await adapter.make(router, request_timeout=0.05).request(PROMPT, TOOLS)
    assert_retryable(caught.value, "timed out", "request_timeout")
    assert len(asked) == 1


async def test_a_body_that_drops_without_streaming_is_retryable(
    router: respx.Router, recorded: Recorded, adapter: Adapter
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"id": "x", '
        raise httpx.RemoteProtocolError("peer closed connection")

    router.post(adapter.url).mock(
        return_value=httpx.Response(
            200, headers={"content-type": "application/json"}, content=body()
        )
    )
    with pytest.raises(ModelHTTPError) as caught:
        await adapter.make(router).request(PROMPT, TOOLS)
    assert_retryable(caught.value, "connection failed")


async def test_an_error_status_of_a_stream_is_mapped(
    router: respx.Router, adapter: Adapter
) -> None:
    router.post(adapter.url).respond(503, json={"error": {"message": "down", "type": "server"}})
    with pytest.raises(ModelHTTPError) as caught:
        await collect(adapter.make(router))
    assert (caught.value.status_code, caught.value.retryable) == (503, True)


# -- per adapter -----------------------------------------------------------------------


async def test_chat_without_done_but_with_finish_and_usage_is_complete(
    router: respx.Router, recorded: Recorded
) -> None:
    # Some OpenAI-compatible servers end the body without `data: [DONE]`.
    events = events_of(recorded.sse("openai_chat_stream_text_usage"))
    assert events[-1] == b"data: [DONE]"
    router.post(ADAPTERS["openai_chat"].url).mock(return_value=sse_response(joined(events[:-1])))
    (*_, done) = await collect(_chat(router))
    assert done.response.text == "This is a test. How can I assist you today?"
    assert done.response.usage.output_tokens == 12


async def test_chat_cut_between_finish_and_usage_is_truncated(
    router: respx.Router, recorded: Recorded
) -> None:
    events = events_of(recorded.sse("openai_chat_stream_text_usage"))
    router.post(ADAPTERS["openai_chat"].url).mock(
        return_value=sse_response(joined(before(events, b'"usage":{')))
    )
    with pytest.raises(ModelHTTPError, match="ended early"):
        await collect(_chat(router))


async def test_chat_text_cut_short_is_not_an_answer(
    router: respx.Router, recorded: Recorded
) -> None:
    events = events_of(recorded.sse("openai_chat_stream_text_usage"))
    router.post(ADAPTERS["openai_chat"].url).mock(return_value=sse_response(joined(events[:4])))
    seen: list[Any] = []
    with pytest.raises(ModelHTTPError, match="ended early"):
        async for event in _chat(router).stream(PROMPT, []):
            seen.append(event)
    assert [type(e) for e in seen] == [TextDelta] * len(seen) and seen


async def test_responses_error_event_after_output_is_mapped(
    router: respx.Router, recorded: Recorded
) -> None:
    events = events_of(recorded.sse("openai_responses_stream_function_call"))
    error = {"type": "error", "code": "server_error", "message": "The server had an error"}
    body = joined([*events[:4], b"event: error\ndata: " + json.dumps(error).encode()])
    router.post(ADAPTERS["openai_responses"].url).mock(return_value=sse_response(body))
    with pytest.raises(ModelHTTPError) as caught:
        await collect(_responses(router))
    assert (caught.value.status_code, caught.value.retryable) == (500, True)
    assert "The server had an error" in str(caught.value)


async def test_anthropic_tool_input_cut_off_keeps_what_the_server_sent(
    router: respx.Router, recorded: Recorded
) -> None:
    # Built from the recorded stream: it stops inside get_time's input, as a max_tokens
    # cut does (content_block_stop, message_delta with stop_reason max_tokens).
    events = events_of(recorded.sse("anthropic_messages_stream_tool_use"))
    position = next(i for i, e in enumerate(events) if b"os_Angele" in e)
    ending = [
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 140},
        },
        {"type": "message_stop"},
    ]
    tail = [f"event: {e['type']}\ndata: {json.dumps(e)}".encode() for e in ending]
    router.post(ADAPTERS["anthropic_messages"].url).mock(
        return_value=sse_response(joined(events[: position + 1] + tail))
    )

    events_seen = await collect(_anthropic(router))
    response = events_seen[-1].response
    weather, clock = response.tool_calls
    assert weather.arguments == {"location": "San Francisco, CA", "unit": "celsius"}
    assert (clock.name, clock.arguments) == ("get_time", {})
    assert clock.raw_arguments == '{"timezone": "America/Los_Angele'
    streamed = "".join(
        e.arguments_delta for e in events_seen if isinstance(e, ToolCallDelta) and e.index == 1
    )
    assert streamed == clock.raw_arguments
    assert response.stop_reason == "max_tokens"
    assert response.usage.output_tokens == 140
    block = response.raw["content"][2]  # type: ignore[index]
    assert (block["input"], block["partial_json"]) == ({}, clock.raw_arguments)
    assert "partial_json" not in response.raw["content"][1]  # type: ignore[index]
    assert AnthropicMessages.parse_raw(response.raw or {}) == response


async def test_anthropic_stream_body_has_the_shape_of_a_message(
    router: respx.Router, recorded: Recorded
) -> None:
    router.post(ADAPTERS["anthropic_messages"].url).mock(
        return_value=sse_response(recorded.sse("anthropic_messages_stream_text"))
    )
    (*_, done) = await collect(_anthropic(router))
    raw = done.response.raw or {}
    assert raw["content"] == [{"type": "text", "text": "Hello"}]
    assert raw["id"] == "msg_01T8kTq7cYyYJeQ5DxcVUc6D"
    assert (raw["type"], raw["role"], raw["stop_reason"]) == ("message", "assistant", "end_turn")
    assert raw["usage"]["output_tokens"] == 4 and raw["usage"]["input_tokens"] == 10


# -- the SSE reader ----------------------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(*parts: bytes) -> list[SSEvent]:
    return [event async for event in iter_sse(chunks(*parts))]


async def test_sse_line_endings_comments_and_multiline_data() -> None:
    events = await read(
        b": a comment\r\nevent: a\r\ndata: 1\r\n\r",
        b"\ndata:2\ndata: 3\n\nevent: skipped-without-data\n\n",
        b"data: caf\xc3",
        b"\xa9\r\rdata: cut off",
    )
    assert events == [SSEvent("a", "1"), SSEvent(None, "2\n3"), SSEvent(None, "café")]


async def test_sse_cr_at_the_end_of_a_chunk_waits_for_its_lf() -> None:
    assert await read(b"data: x\r", b"\n\r\n") == [SSEvent(None, "x")]


async def test_sse_events_without_data_are_skipped() -> None:
    assert await read(b"event: ping\ndata:\n\ndata\n\n: keep-alive\n\ndata: 1\n\n") == [
        SSEvent(None, "1")
    ]


async def test_bytes_that_are_not_utf8_are_a_retryable_corrupt_stream(
    router: respx.Router, recorded: Recorded, adapter: Adapter
) -> None:
    events = events_of(recorded.sse(adapter.fixture))
    events[2] = events[2].replace(b"data: {", b"data: {\xff\xfe", 1)
    router.post(adapter.url).mock(return_value=sse_response(joined(events)))
    with pytest.raises(ModelHTTPError) as caught:
        await collect(adapter.make(router))
    assert_retryable(caught.value, "corrupt stream", "not UTF-8")
