"""Model transport in agent runs, on both backends (issue 10 items 1, 14, 15, 18, 19).

- Transport options (key, base URL, headers, query, timeouts) are never recorded nor
  hashed: a run recorded through one gateway replays with another key, headers and
  timeouts; the endpoint that answered each LLM step is recorded without credentials.
- A stream that ends early, carries a corrupt event or drops is retried, and only the
  complete answer is recorded; when retries run out the step is ERROR with no output.
- A tool input that Anthropic streamed cut off is recorded as sent, and the model is told
  its JSON was cut.

HTTP goes through `agentdur.testing`'s respx bridge with the real SDKs; bodies are the
recorded payloads of tests/fixtures/providers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur.models import AnthropicMessages, Model, OpenAIChat, OpenAIResponses, TextDelta
from agentdur.testing import anthropic_client, mock_http_client, openai_client
from tests.test_agent_providers import (
    FIXTURES,
    SSE,
    body,
    chat_text,
    responses_text_sse,
    sent,
)

SECRET = "sk-live-SECRET-4711"
GATEWAY = "https://gw.example.test/v1"


@agentdur.tool(effect="read_only")
def lookup_population(country: str) -> str:
    """Returns the current population of the specified fictional country"""
    return "POPULATION-RESULT-4711"


def database_text(rt: agentdur.Runtime, run_id: str) -> str:
    run = dataclasses.asdict(rt.get_run(run_id))
    steps = [dataclasses.asdict(step) for step in rt.steps(run_id)]
    return json.dumps({"run": run, "steps": steps}, default=str)


def gateway_model(router: respx.Router, **options: Any) -> OpenAIChat:
    return OpenAIChat(
        "gpt-4o-mini",
        base_url=GATEWAY,
        api_key=SECRET,
        default_headers={"X-Gateway-Key": SECRET},
        http_client=mock_http_client(router),
        temperature=0,
        **options,
    )


def chat_agent(model: Model) -> agentdur.Agent:
    return agentdur.Agent(
        "transport-chat", model, [lookup_population], "Answer YES or NO.", model_retries=0
    )


def test_transport_options_are_not_recorded_and_do_not_break_replay(
    rt: agentdur.Runtime, database_url: str
) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(f"{GATEWAY}/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=body("openai_chat_tool_call")),
            httpx.Response(200, json=chat_text("NO")),
        ]
    )
    model = gateway_model(
        router,
        extra_headers={"Authorization-Extra": SECRET},
        extra_query={"api-key": SECRET},
        user="customer-7",
        timeout=30,
        idle_timeout=10,
    )
    assert rt.run_agent(chat_agent(model), "Can Crumpet have dragons?", run_id="r").output == "NO"
    assert route.call_count == 2
    assert route.calls.last.request.url.params["api-key"] == SECRET  # sent, as asked

    text = database_text(rt, "r")
    assert SECRET not in text
    assert "customer-7" not in text and "Authorization-Extra" not in text
    llm = [step for step in rt.steps("r") if step.kind == "llm"]
    assert [step.input["params"] for step in llm] == [{"temperature": 0}, {"temperature": 0}]
    assert [step.output["endpoint"] for step in llm] == [GATEWAY, GATEWAY]
    assert text.count("gw.example.test") == 2  # the endpoints, nothing else

    # Replay with another key, headers, timeouts and even another base URL: the same
    # requests as recorded, so the recording answers and nothing is sent.
    offline = respx.Router(assert_all_mocked=True)
    unreachable = offline.route().mock(side_effect=httpx.ConnectError("the network is off"))
    moved = OpenAIChat(
        "gpt-4o-mini",
        base_url="http://10.0.0.7:8000/v1",
        api_key="another-key",
        default_headers={"X-Other": "1"},
        http_client=mock_http_client(offline),
        temperature=0,
        request_timeout=300,
        idle_timeout=None,
        extra_headers={"X-Trace": "abc"},
        store=False,
    )
    with agentdur.Runtime(database_url, executor_id="replayer") as other:
        other.register(chat_agent(moved))
        assert other.replay("r") == rt.get_run("r").output
    assert unreachable.call_count == 0

    # A parameter that changes the answer does break it: the hash covers it.
    with agentdur.Runtime(database_url, executor_id="replayer-2") as other:
        other.register(chat_agent(gateway_model(offline, top_p=0.5)))
        with pytest.raises(agentdur.NonDeterminismError, match="top_p"):
            other.replay("r")


# -- stream faults in agent runs ----------------------------------------------------------


def text_sse(name: str) -> bytes:
    return (FIXTURES / f"{name}.sse").read_bytes()


def events_of(content: bytes) -> list[bytes]:
    return [event for event in content.split(b"\n\n") if event.strip()]


def sse_reply(content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": SSE}, content=content)


def responses_stream_bytes(text: str) -> bytes:
    return responses_text_sse(text).content


STREAMS: dict[str, tuple[Callable[[respx.Router], Model], str, bytes, str, bytes]] = {
    # adapter: (model, url, complete stream, its text, bytes only in the terminal part)
    "openai_chat": (
        lambda router: OpenAIChat("gpt-4o-mini", client=openai_client(router)),
        "https://api.openai.com/v1/chat/completions",
        text_sse("openai_chat_stream_text_usage"),
        "This is a test. How can I assist you today?",
        b'"finish_reason":"stop"',
    ),
    "openai_responses": (
        lambda router: OpenAIResponses("gpt-4o-mini", client=openai_client(router)),
        "https://api.openai.com/v1/responses",
        responses_stream_bytes("This is a test, streamed in words."),
        "This is a test, streamed in words.",
        b'"type": "response.completed"',
    ),
    "anthropic_messages": (
        lambda router: AnthropicMessages("claude-haiku-4-5", client=anthropic_client(router)),
        "https://api.anthropic.com/v1/messages",
        text_sse("anthropic_messages_stream_text"),
        "Hello",
        b'"type":"message_delta"',
    ),
}


def faulty(kind: str, complete: bytes, terminal: bytes) -> httpx.Response:
    events = events_of(complete)
    cut = next(i for i, event in enumerate(events) if terminal in event)
    head = b"".join(event + b"\n\n" for event in events[:cut])
    if kind == "truncated":
        return sse_reply(head)
    if kind == "corrupt":
        return sse_reply(head + b'data: {"type": "content_block_delta", "ind\n\n' + complete)

    async def dropping() -> AsyncIterator[bytes]:
        yield head
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    return sse_reply(dropping())


def streamed(
    rt: agentdur.Runtime, bot: agentdur.Agent, run_id: str
) -> tuple[list[Any], agentdur.AgentStream]:
    stream = rt.stream_agent(bot, "Say this is a test", run_id=run_id)
    return list(stream), stream


@pytest.mark.parametrize("fault", ["truncated", "corrupt", "dropped"])
@pytest.mark.parametrize("adapter", list(STREAMS))
def test_a_faulty_stream_is_retried_and_only_the_answer_recorded(
    rt: agentdur.Runtime, adapter: str, fault: str
) -> None:
    make, url, complete, text, terminal = STREAMS[adapter]
    router = respx.Router(assert_all_mocked=True)
    route = router.post(url).mock(
        side_effect=[faulty(fault, complete, terminal), sse_reply(complete)]
    )
    bot = agentdur.Agent(f"faulty-{adapter}-{fault}", make(router))
    bot.model_policy = agentdur.RetryPolicy(retries=2, backoff=0.0, retry_on=(agentdur.ModelError,))

    events, stream = streamed(rt, bot, "r")

    assert stream.result is not None and stream.result.output == text
    assert route.call_count == 2
    (step,) = rt.steps("r")
    assert (step.kind, step.status, step.attempts) == ("llm", "SUCCEEDED", 2)
    recorded = agentdur.recording.response_of(step)
    assert recorded.text == text
    # The cut attempt's text, then the word that it restarted, then the complete one.
    restarts = [e for e in events if isinstance(e, agentdur.AttemptRestarted)]
    assert [(r.step_index, r.attempt) for r in restarts] == [(0, 2)]
    after = events[events.index(restarts[0]) + 1 :]
    assert all(isinstance(event, TextDelta) for event in after)
    assert "".join(e.text for e in after) == text


@pytest.mark.parametrize("adapter", list(STREAMS))
def test_a_stream_that_keeps_ending_early_fails_the_step_with_nothing_recorded(
    rt: agentdur.Runtime, adapter: str
) -> None:
    make, url, complete, _, terminal = STREAMS[adapter]
    router = respx.Router(assert_all_mocked=True)
    route = router.post(url).mock(
        side_effect=lambda request: faulty("truncated", complete, terminal)
    )
    bot = agentdur.Agent(f"truncated-{adapter}", make(router), model_retries=1)
    bot.model_policy = agentdur.RetryPolicy(retries=1, backoff=0.0, retry_on=(agentdur.ModelError,))

    with pytest.raises(agentdur.ModelHTTPError, match="ended early"):
        streamed(rt, bot, "r")
    assert route.call_count == 2
    (step,) = rt.steps("r")
    assert (step.status, step.attempts, step.output) == ("ERROR", 2, None)
    assert step.error is not None and "ended early" in step.error["message"]
    assert rt.get_run("r").status == "FAILED"


# -- Anthropic tool input cut off --------------------------------------------------------


@agentdur.tool(effect="read_only")
def get_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location"""
    return f"{location}: 18 {unit}"


@agentdur.tool(effect="read_only")
def get_time(timezone: str) -> str:
    """Get the current time in a given time zone"""
    return f"12:00 in {timezone}"


def cut_tool_stream() -> bytes:
    """The recorded tool-use stream, stopped inside get_time's input as a max_tokens cut
    ends it (content_block_stop, message_delta with stop_reason max_tokens, message_stop)."""
    events = events_of(text_sse("anthropic_messages_stream_tool_use"))
    position = next(i for i, event in enumerate(events) if b"os_Angele" in event)
    ending = [
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {}},
        {"type": "message_stop"},
    ]
    tail = [f"event: {e['type']}\ndata: {json.dumps(e)}".encode() for e in ending]
    return b"".join(event + b"\n\n" for event in events[: position + 1] + tail)


def test_anthropic_cut_tool_input_is_recorded_and_reported_as_cut(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post("https://api.anthropic.com/v1/messages").mock(
        side_effect=[
            sse_reply(cut_tool_stream()),
            sse_reply(text_sse("anthropic_messages_stream_text")),
        ]
    )
    model = AnthropicMessages(
        "claude-3-5-sonnet-20240620", client=anthropic_client(router), max_tokens=1024
    )
    bot = agentdur.Agent("anthropic-cut-tool", model, [get_weather, get_time], model_retries=0)

    _, stream = streamed(rt, bot, "r")

    assert stream.result is not None and stream.result.output == "Hello"
    llm0, weather, clock, llm1 = rt.steps("r")
    assert (llm0.kind, llm1.kind, llm1.status) == ("llm", "llm", "SUCCEEDED")
    block = llm0.output["raw"]["content"][2]
    assert (block["input"], block["partial_json"]) == ({}, '{"timezone": "America/Los_Angele')
    assert weather.status == "SUCCEEDED"
    assert clock.status == "ERROR" and clock.error is not None
    assert "not valid JSON" in clock.error["message"]
    assert "missing" not in clock.error["message"] and "required" not in clock.error["message"]
    told = sent(route, 1)["messages"][-1]["content"]
    result = next(part for part in told if part["tool_use_id"] == block["id"])
    assert result["is_error"] is True
    assert "not valid JSON" in result["content"] and "America/Los_Angele" in result["content"]
    assert rt.replay("r") == rt.get_run("r").output  # the recording replays as it ran
