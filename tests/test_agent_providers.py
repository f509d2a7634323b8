"""Agent runs through the real `openai` / `anthropic` SDK clients, on both backends.

HTTP goes through `agentdur.testing`'s respx bridge; response bodies are the real
recorded API responses in tests/fixtures/providers (see its SOURCES.md), and the
second turns are built in the same shape from the recorded text answers.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur import recording
from agentdur.models import (
    AnthropicMessages,
    AssistantMessage,
    Model,
    ModelResponse,
    OpenAIChat,
    OpenAIResponses,
    Usage,
    UserMessage,
)
from agentdur.models.base import StreamDone, TextDelta, ToolCallDelta, ToolCallStarted
from agentdur.testing import anthropic_client, openai_client
from tests.helpers import wait_for

CHAT_URL = "https://api.openai.com/v1/chat/completions"
RESPONSES_URL = "https://api.openai.com/v1/responses"
MESSAGES_URL = "https://api.anthropic.com/v1/messages"
SSE = "text/event-stream; charset=utf-8"


def fixtures_dir() -> Path:
    configured = os.environ.get("AGENTDUR_FIXTURES")
    if configured:
        return Path(configured)
    return Path(__file__).parent / "fixtures" / "providers"


FIXTURES = fixtures_dir()


@pytest.fixture(autouse=True)
def _fixtures_present() -> None:
    if not (FIXTURES / "SOURCES.md").exists():
        pytest.fail(f"recorded provider fixtures not found in {FIXTURES}; set AGENTDUR_FIXTURES")


def body(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def reply(data: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers)


def recorded_reply(name: str) -> httpx.Response:
    meta = json.loads((FIXTURES / f"{name}.response_meta.json").read_text())
    content = (FIXTURES / f"{name}.json").read_bytes()
    return httpx.Response(meta["status_code"], headers=meta["headers"], content=content)


def sse(name: str) -> httpx.Response:
    content = (FIXTURES / f"{name}.sse").read_bytes()
    return httpx.Response(200, headers={"content-type": SSE}, content=content)


def sent(route: respx.Route, call: int = -1) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(route.calls[call].request.content)
    return data


def chat_text(text: str) -> dict[str, Any]:
    """A Chat Completions text answer in the recorded shape."""
    data = body("openai_chat_text")
    data["choices"][0]["message"]["content"] = text
    return data


def anthropic_text(text: str) -> dict[str, Any]:
    data = body("anthropic_messages_text")
    data["content"][0]["text"] = text
    return data


def responses_text(text: str) -> dict[str, Any]:
    data = body("openai_responses_text")
    data["output"][0]["content"][0]["text"] = text
    return data


def responses_text_sse(text: str) -> httpx.Response:
    """A Responses text stream built in the recorded event shape."""
    final = responses_text(text)
    item = final["output"][0]
    started = {**copy.deepcopy(final), "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
    ]
    for piece in text.split(" "):
        delta = piece if not events[-1][0].endswith("delta") else " " + piece
        events.append(
            (
                "response.output_text.delta",
                {
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                },
            )
        )
    events += [
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": final}),
    ]
    lines = []
    for number, (kind, data) in enumerate(events):
        payload = {"type": kind, **data, "sequence_number": number}
        lines.append(f"event: {kind}\ndata: {json.dumps(payload)}\n\n")
    return httpx.Response(200, headers={"content-type": SSE}, content="".join(lines).encode())


def same_response(recorded: ModelResponse, live: ModelResponse) -> bool:
    """Equal, reading argument text as JSON (JSONB gives object keys back sorted)."""

    def plain(response: ModelResponse) -> dict[str, Any]:
        data = response.model_dump()
        for call in data["tool_calls"]:
            call["raw_arguments"] = json.loads(call["raw_arguments"])
        return data

    return plain(recorded) == plain(live)


def rows(rt: agentdur.Runtime, run_id: str) -> list[tuple[int, str, str, str, int]]:
    return [(s.step_index, s.kind, s.name, s.status, s.attempts) for s in rt.steps(run_id)]


def database_text(rt: agentdur.Runtime, run_id: str) -> str:
    """Everything recorded about a run, as JSON text."""
    run = dataclasses.asdict(rt.get_run(run_id))
    steps = [dataclasses.asdict(step) for step in rt.steps(run_id)]
    return json.dumps({"run": run, "steps": steps}, default=str)


def assert_no_secrets(rt: agentdur.Runtime, run_id: str, route: respx.Route) -> None:
    headers = route.calls[0].request.headers
    assert "test-key" in (headers.get("authorization", "") + headers.get("x-api-key", ""))
    text = database_text(rt, run_id).lower()
    for secret in ("test-key", "authorization", "x-api-key", "bearer"):
        assert secret not in text, f"{secret!r} was recorded"
    url = rt.store.url
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = Path(path).read_bytes().lower()
        assert b"test-key" not in raw and b"authorization" not in raw


# -- tools matching the fixtures' tool calls -------------------------------------------

CALLED: list[tuple[str, dict[str, Any]]] = []
BLOCK = {"on": False}
ENTERED = threading.Event()
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLED.clear()
    BLOCK["on"] = False
    ENTERED.clear()
    GATE.clear()


@agentdur.tool(effect="read_only")
def lookup_population(country: str) -> int:
    """Returns the current population of the specified fictional country"""
    CALLED.append(("lookup_population", {"country": country}))
    if BLOCK["on"]:
        ENTERED.set()
        GATE.wait(30)
    return 12500


@agentdur.tool(effect="read_only")
def can_have_dragons(population: int) -> bool:
    """Returns True if the specified population can have dragons, False otherwise"""
    return population > 10000


@agentdur.tool(effect="read_only")
def get_current_weather(location: str) -> str:
    """Get the current weather in a given location"""
    CALLED.append(("get_current_weather", {"location": location}))
    return f"{location}: 18C and clear"


def _search(number: str) -> agentdur.Tool:
    def search(query: str) -> list[str]:
        CALLED.append((f"parallel_local_search_{number}", {"query": query}))
        return [f"result for {query}"]

    search.__doc__ = f"Local search tool #{number} for concurrency testing."
    return agentdur.tool(name=f"parallel_local_search_{number}", effect="read_only")(search)


SEARCHES = [_search("one"), _search("two"), _search("three")]


@agentdur.tool(effect="read_only")
def get_weather(location: str, unit: str = "fahrenheit") -> dict[str, Any]:
    """Weather in a location."""
    CALLED.append(("get_weather", {"location": location, "unit": unit}))
    return {"location": location, "unit": unit, "temperature": 17}


@agentdur.tool(effect="read_only")
def get_time(timezone: str) -> str:
    """Current time in a timezone."""
    CALLED.append(("get_time", {"timezone": timezone}))
    return "09:30"


@agentdur.tool(effect="read_only")
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    CALLED.append(("multiply", {"a": a, "b": b}))
    return a * b


# -- one case per adapter --------------------------------------------------------------


@dataclasses.dataclass
class Case:
    url: str
    make: Callable[[respx.Router], Model]
    first: str
    second: dict[str, Any]
    final: str
    tools: list[agentdur.Tool]
    model: str
    usage: Usage
    check_second_request: Callable[[dict[str, Any], dict[str, Any]], None]


def _check_chat(request: dict[str, Any], first: dict[str, Any]) -> None:
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert request["messages"] == [
        {"role": "system", "content": "Answer with YES or NO."},
        {"role": "user", "content": "Can the country of Crumpet have dragons?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_TTY8UFNo7rNCaOBUNtlRSvMG", "content": "12500"},
    ]
    assert [t["function"]["name"] for t in request["tools"]] == [
        "lookup_population",
        "can_have_dragons",
    ]


def _check_anthropic(request: dict[str, Any], first: dict[str, Any]) -> None:
    assert request["system"] == "Answer with YES or NO."
    uses = [block for block in first["content"] if block["type"] == "tool_use"]
    assert request["messages"] == [
        {"role": "user", "content": "Can the country of Crumpet have dragons?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": first["content"][0]["text"]}]
            + [
                {"type": "tool_use", "id": u["id"], "name": u["name"], "input": u["input"]}
                for u in uses
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": u["id"],
                    "content": json.dumps([f"result for {u['input']['query']}"]),
                }
                for u in uses
            ],
        },
    ]
    assert [t["name"] for t in request["tools"]] == [t.name for t in SEARCHES]


def _check_responses(request: dict[str, Any], first: dict[str, Any]) -> None:
    item = first["output"][0]
    assert request["instructions"] == "Answer with YES or NO."
    assert request["input"] == [
        {"role": "user", "content": "Can the country of Crumpet have dragons?"},
        {
            "type": "function_call",
            "call_id": item["call_id"],
            "name": "get_current_weather",
            "arguments": item["arguments"],
        },
        {
            "type": "function_call_output",
            "call_id": item["call_id"],
            "output": "Seattle, WA: 18C and clear",
        },
    ]


CASES = {
    "openai_chat": Case(
        CHAT_URL,
        lambda router: OpenAIChat("gpt-4o-mini", client=openai_client(router)),
        "openai_chat_tool_call",
        chat_text("YES"),
        "YES",
        [lookup_population, can_have_dragons],
        "gpt-4o-mini-2024-07-18",
        Usage(input_tokens=92, output_tokens=17),
        _check_chat,
    ),
    "anthropic": Case(
        MESSAGES_URL,
        lambda router: AnthropicMessages("claude-sonnet-4-6", client=anthropic_client(router)),
        "anthropic_messages_tool_use_parallel",
        anthropic_text("YES"),
        "YES",
        SEARCHES,
        "claude-sonnet-4-6",
        Usage(input_tokens=914, output_tokens=169),
        _check_anthropic,
    ),
    "openai_responses": Case(
        RESPONSES_URL,
        lambda router: OpenAIResponses("gpt-4o-mini", client=openai_client(router)),
        "openai_responses_function_call",
        responses_text("YES"),
        "YES",
        [get_current_weather],
        "gpt-4o-mini-2024-07-18",
        Usage(input_tokens=72, output_tokens=8),
        _check_responses,
    ),
}


def _agent(name: str, model: Model, tools: list[Any], **options: Any) -> agentdur.Agent:
    bot = agentdur.Agent(f"t_prov_{name}", model, tools, "Answer with YES or NO.", **options)
    bot.model_policy = agentdur.RetryPolicy(retries=3, backoff=0.0, retry_on=(agentdur.ModelError,))
    return bot


@pytest.mark.parametrize("adapter", list(CASES))
def test_two_turn_run(rt: agentdur.Runtime, database_url: str, adapter: str) -> None:
    case = CASES[adapter]
    router = respx.Router(assert_all_mocked=True)
    route = router.post(case.url).mock(side_effect=[reply(body(case.first)), reply(case.second)])
    bot = _agent(f"two_turns_{adapter}", case.make(router), case.tools)
    result = rt.run_agent(bot, "Can the country of Crumpet have dragons?", run_id="r")

    assert result.output == case.final
    assert route.call_count == 2
    case.check_second_request(sent(route, 1), body(case.first))
    calls = ModelResponse.model_validate(case.make(router).parse_raw(body(case.first))).tool_calls
    tool_rows = [r for r in rows(rt, "r") if r[1] == "tool"]
    assert [r[2:] for r in tool_rows] == [(c.name, "SUCCEEDED", 1) for c in calls]
    assert [s.input["arguments"] for s in rt.steps("r") if s.kind == "tool"] == [
        c.arguments for c in calls
    ]
    llm = [s for s in rt.steps("r") if s.kind == "llm"]
    assert [(s.status, s.attempts) for s in llm] == [("SUCCEEDED", 1), ("SUCCEEDED", 1)]
    assert llm[0].model == case.model
    assert Usage.model_validate(llm[0].usage) == case.usage
    assert llm[0].name == bot.model.model_name
    assert set(llm[0].output) == {"raw", "latency_ms", "endpoint"}
    assert case.url.startswith(llm[0].output["endpoint"] + "/")  # which server answered
    assert llm[0].output["raw"] == body(case.first)
    assert llm[1].output["raw"] == case.second
    assert result.usage == case.usage + Usage.model_validate(llm[1].usage)
    assert [m.role for m in result.messages] == (
        ["system", "user", "assistant"] + ["tool"] * len(calls) + ["assistant"]
    )
    assert result.messages[-1] == AssistantMessage(content=case.final)
    assert_no_secrets(rt, "r", route)

    # A second process: idempotent start and replay answer from the recording, offline.
    with agentdur.Runtime(database_url, executor_id=f"t-prov-{uuid.uuid4().hex[:6]}") as other:
        again = other.run_agent(bot, "Can the country of Crumpet have dragons?", run_id="r")
        assert (again.output, again.messages, again.usage) == (
            result.output,
            result.messages,
            result.usage,
        )
        assert other.replay("r")["output"] == case.final
    assert route.call_count == 2
    assert len(CALLED) == len(calls)


def test_recovery_does_not_repeat_a_recorded_request(database_url: str) -> None:
    executor = f"t-prov-{uuid.uuid4().hex[:8]}"
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(
        side_effect=[reply(body("openai_chat_tool_call")), reply(chat_text("YES"))]
    )
    tools = [lookup_population, can_have_dragons]
    BLOCK["on"] = True
    first = agentdur.Runtime(database_url, executor_id=executor)
    bot = _agent("recover", OpenAIChat("gpt-4o-mini", client=openai_client(router)), tools)
    first.start_agent(bot, "Can Crumpet have dragons?", run_id="r")
    assert ENTERED.wait(20)
    wait_for(lambda: len(first.steps("r")) == 1, what="the first LLM step")
    first.close()
    assert route.call_count == 1
    BLOCK["on"] = False
    GATE.set()

    again = _agent("recover", OpenAIChat("gpt-4o-mini", client=openai_client(router)), tools)
    with agentdur.Runtime(database_url, executor_id=executor) as second:
        (handle,) = second.recover()
        result = second.agent_result(again, "r", handle.result(timeout=20))
        assert result.output == "YES"
        assert route.call_count == 2  # only the second turn went over the network
        assert rows(second, "r") == [
            (0, "llm", "gpt-4o-mini", "SUCCEEDED", 1),
            (1, "tool", "lookup_population", "SUCCEEDED", 1),
            (2, "llm", "gpt-4o-mini", "SUCCEEDED", 1),
        ]
        assert sent(route, 1)["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_TTY8UFNo7rNCaOBUNtlRSvMG",
            "content": "12500",
        }


# -- provider errors and retries -------------------------------------------------------


def _chat_agent(name: str, router: respx.Router, **options: Any) -> agentdur.Agent:
    return agentdur.Agent(
        f"t_prov_{name}", OpenAIChat("gpt-4o-mini", client=openai_client(router)), **options
    )


def test_429_with_retry_after_is_retried(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    limited = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    route = router.post(CHAT_URL).mock(
        side_effect=[reply(limited, 429, **{"retry-after": "0"}), reply(chat_text("fine"))]
    )
    bot = _chat_agent("retry_429", router)  # the default policy: Retry-After 0 waits 0
    assert rt.run_agent(bot, "hi", run_id="r").output == "fine"
    assert route.call_count == 2
    assert rows(rt, "r") == [(0, "llm", "gpt-4o-mini", "SUCCEEDED", 2)]


def test_400_is_not_retried(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(
        return_value=recorded_reply("openai_chat_error_400_invalid_request")
    )
    bot = _chat_agent("no_retry_400", router, model_retries=4)
    with pytest.raises(agentdur.ModelHTTPError) as raised:
        rt.run_agent(bot, "hi", run_id="r")
    assert raised.value.status_code == 400
    assert "Unsupported parameter: 'stop'" in str(raised.value)
    assert route.call_count == 1
    assert rows(rt, "r") == [(0, "llm", "gpt-4o-mini", "ERROR", 1)]
    step = rt.steps("r")[0]
    assert step.error["type"] == "ModelHTTPError"
    assert step.error["fields"]["status_code"] == 400
    run = rt.get_run("r")
    assert (run.status, run.error["type"]) == ("FAILED", "ModelHTTPError")


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (408, True),
        (409, True),
        (500, True),
        (502, True),
        (503, True),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_which_statuses_are_retried(rt: agentdur.Runtime, status: int, retried: bool) -> None:
    router = respx.Router(assert_all_mocked=True)
    error = {"error": {"message": f"status {status}", "type": "x", "code": None}}
    route = router.post(CHAT_URL).mock(side_effect=[reply(error, status), reply(chat_text("fine"))])
    bot = _chat_agent(f"status_{status}", router)
    bot.model_policy = agentdur.RetryPolicy(retries=3, backoff=0.0, retry_on=(agentdur.ModelError,))
    if retried:
        assert rt.run_agent(bot, "hi", run_id="r").output == "fine"
        assert (route.call_count, rows(rt, "r")[0][3:]) == (2, ("SUCCEEDED", 2))
    else:
        with pytest.raises(agentdur.ModelHTTPError):
            rt.run_agent(bot, "hi", run_id="r")
        assert (route.call_count, rows(rt, "r")[0][3:]) == (1, ("ERROR", 1))


def test_retries_run_out(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(return_value=reply({"error": {"message": "down"}}, 503))
    bot = _chat_agent("retries_run_out", router)
    bot.model_policy = agentdur.RetryPolicy(retries=2, backoff=0.0, retry_on=(agentdur.ModelError,))
    with pytest.raises(agentdur.ModelHTTPError, match="503"):
        rt.run_agent(bot, "hi", run_id="r")
    assert route.call_count == 3
    assert rows(rt, "r") == [(0, "llm", "gpt-4o-mini", "ERROR", 3)]


def test_model_retries_option_sets_the_attempts(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    limited = reply({"error": {"message": "slow down"}}, 429, **{"retry-after": "0"})
    route = router.post(CHAT_URL).mock(return_value=limited)
    bot = _chat_agent("model_retries_1", router, model_retries=1)
    with pytest.raises(agentdur.ModelHTTPError):
        rt.run_agent(bot, "hi", run_id="r")
    assert route.call_count == 2
    assert rows(rt, "r")[0][3:] == ("ERROR", 2)


def test_anthropic_529_overloaded_is_retried(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    route = router.post(MESSAGES_URL).mock(
        side_effect=[reply(overloaded, 529), reply(body("anthropic_messages_text"))]
    )
    model = AnthropicMessages("claude-sonnet-4-0", client=anthropic_client(router))
    bot = _agent("anthropic_529", model, [])
    result = rt.run_agent(bot, "Say hello", run_id="r")
    assert result.output == "Hello! It's nice to meet you. How are you doing today?"
    assert route.call_count == 2
    assert rows(rt, "r") == [(0, "llm", "claude-sonnet-4-0", "SUCCEEDED", 2)]
    assert rt.steps("r")[0].model == "claude-sonnet-4-20250514"


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ConnectError])
def test_timeouts_and_connection_errors_are_retried(
    rt: agentdur.Runtime, error: type[httpx.TransportError]
) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(
        side_effect=[error("network trouble"), reply(chat_text("through"))]
    )
    bot = _agent(
        f"transport_{error.__name__}", OpenAIChat("gpt-4o-mini", client=openai_client(router)), []
    )
    assert rt.run_agent(bot, "hi", run_id="r").output == "through"
    assert route.call_count == 2
    assert rows(rt, "r") == [(0, "llm", "gpt-4o-mini", "SUCCEEDED", 2)]


def test_finish_length_is_model_behavior_error(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    router.post(CHAT_URL).mock(return_value=reply(body("openai_chat_finish_length")))
    with pytest.raises(agentdur.ModelBehaviorError, match="max_tokens"):
        rt.run_agent(_chat_agent("finish_length", router), "story", run_id="r")
    (step,) = rt.steps("r")
    assert (step.status, step.output["raw"]) == ("SUCCEEDED", body("openai_chat_finish_length"))
    assert rt.get_run("r").status == "FAILED"


def test_anthropic_max_tokens_is_model_behavior_error(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    router.post(MESSAGES_URL).mock(return_value=reply(body("anthropic_messages_max_tokens")))
    model = AnthropicMessages("claude-sonnet-4-0", client=anthropic_client(router))
    with pytest.raises(agentdur.ModelBehaviorError, match="max_tokens"):
        rt.run_agent(_agent("anthropic_max_tokens", model, []), "story", run_id="r")
    assert rows(rt, "r")[0][3] == "SUCCEEDED"


# -- streaming ---------------------------------------------------------------------------


def _direct_stream(
    make: Callable[[respx.Router], Model],
    response: httpx.Response,
    url: str,
    messages: list[Any],
    tools: list[Any],
) -> ModelResponse:
    """What the adapter assembles from the same stream when called directly."""
    router = respx.Router(assert_all_mocked=True)
    router.post(url).mock(return_value=response)
    model = make(router)

    async def collect() -> ModelResponse:
        events = [e async for e in model.stream(messages, tools)]
        assert isinstance(events[-1], StreamDone)
        return events[-1].response

    return asyncio.run(collect())


def _by_index(events: list[Any]) -> dict[int, tuple[str, str, str]]:
    calls: dict[int, tuple[str, str, str]] = {}
    for event in events:
        if isinstance(event, ToolCallStarted):
            calls[event.index] = (event.id, event.name, "")
        elif isinstance(event, ToolCallDelta):
            call_id, name, text = calls[event.index]
            calls[event.index] = (call_id, name, text + event.arguments_delta)
    return calls


def stream_chat(router: respx.Router) -> Model:
    return OpenAIChat("gpt-4o-mini", client=openai_client(router))


def stream_anthropic(router: respx.Router) -> Model:
    return AnthropicMessages(
        "claude-3-5-sonnet-20240620", client=anthropic_client(router), max_tokens=1024
    )


def stream_responses(router: respx.Router) -> Model:
    return OpenAIResponses("gpt-5.5", client=openai_client(router))


def test_stream_openai_chat_text(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(return_value=sse("openai_chat_stream_text_usage"))
    make = stream_chat
    bot = agentdur.Agent("t_prov_stream_chat_text", make(router))
    stream = rt.stream_agent(bot, "Say this is a test", run_id="r")
    events = list(stream)

    assert events and all(isinstance(e, TextDelta) for e in events)
    text = "".join(e.text for e in events)
    assert stream.result is not None and stream.result.output == text
    assert text.startswith("This is a test")
    assert sent(route)["stream"] is True
    (step,) = rt.steps("r")
    expected = _direct_stream(
        make,
        sse("openai_chat_stream_text_usage"),
        CHAT_URL,
        [UserMessage(content="Say this is a test")],
        [],
    )
    assert recording.response_of(step) == expected
    assert step.output["raw"] == expected.raw
    assert Usage.model_validate(step.usage) == Usage(input_tokens=12, output_tokens=12)
    assert stream.result.usage == Usage(input_tokens=12, output_tokens=12)
    assert step.model == "gpt-4o-mini-2024-07-18"


def test_stream_openai_chat_parallel_tool_calls(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(
        side_effect=[
            sse("openai_chat_stream_tool_calls_parallel"),
            sse("openai_chat_stream_text_usage"),
        ]
    )
    make = stream_chat
    bot = agentdur.Agent("t_prov_stream_chat_tools", make(router), [get_current_weather])
    prompt = "What's the weather in Seattle and San Francisco today?"
    stream = rt.stream_agent(bot, prompt, run_id="r")
    events = list(stream)

    calls = _by_index(events)
    assert [(calls[i][1], json.loads(calls[i][2])) for i in sorted(calls)] == [
        ("get_current_weather", {"location": "Seattle, WA"}),
        ("get_current_weather", {"location": "San Francisco, CA"}),
    ]
    tool_steps = [s for s in rt.steps("r") if s.kind == "tool"]
    assert [(s.input["call_id"], s.input["arguments"]) for s in tool_steps] == [
        (calls[i][0], json.loads(calls[i][2])) for i in sorted(calls)
    ]
    texts = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert stream.result is not None and stream.result.output == texts
    first_llm = rt.steps("r")[0]
    expected = _direct_stream(
        make,
        sse("openai_chat_stream_tool_calls_parallel"),
        CHAT_URL,
        [UserMessage(content=prompt)],
        bot.tool_definitions(),
    )
    assert recording.response_of(first_llm) == expected
    assert [c.raw_arguments for c in expected.tool_calls] == [calls[0][2], calls[1][2]]
    assert [m["role"] for m in sent(route, 1)["messages"]] == ["user", "assistant", "tool", "tool"]
    assert rt.replay("r")["output"] == texts
    assert route.call_count == 2


def test_stream_anthropic_tool_use(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(MESSAGES_URL).mock(
        side_effect=[
            sse("anthropic_messages_stream_tool_use"),
            sse("anthropic_messages_stream_text"),
        ]
    )
    make = stream_anthropic
    bot = agentdur.Agent("t_prov_stream_anthropic", make(router), [get_weather, get_time])
    prompt = "What is the weather and current time in San Francisco?"
    stream = rt.stream_agent(bot, prompt, run_id="r")
    events = list(stream)

    calls = _by_index(events)
    assert [(calls[i][1], json.loads(calls[i][2])) for i in sorted(calls)] == [
        ("get_weather", {"location": "San Francisco, CA", "unit": "celsius"}),
        ("get_time", {"timezone": "America/Los_Angeles"}),
    ]
    assert CALLED == [
        ("get_weather", {"location": "San Francisco, CA", "unit": "celsius"}),
        ("get_time", {"timezone": "America/Los_Angeles"}),
    ]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    first_text = "".join(texts[:-1])
    assert first_text.startswith("Certainly! I can help you with that information.")
    assert texts[-1] == "Hello"
    assert stream.result is not None and stream.result.output == "Hello"
    first_llm = rt.steps("r")[0]
    expected = _direct_stream(
        make,
        sse("anthropic_messages_stream_tool_use"),
        MESSAGES_URL,
        [UserMessage(content=prompt)],
        bot.tool_definitions(),
    )
    assert same_response(recording.response_of(first_llm), expected)
    assert recording.response_of(first_llm).text == first_text
    second = sent(route, 1)["messages"]
    assert [block["type"] for block in second[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [block["type"] for block in second[2]["content"]] == ["tool_result", "tool_result"]
    # Replaying needs no network and sees the same requests, whatever order the store
    # gives the recorded tool inputs' keys back in.
    assert rt.replay("r")["output"] == "Hello"
    assert route.call_count == 2


def test_stream_openai_responses_function_call(rt: agentdur.Runtime) -> None:
    router = respx.Router(assert_all_mocked=True)
    route = router.post(RESPONSES_URL).mock(
        side_effect=[
            sse("openai_responses_stream_function_call"),
            responses_text_sse("It is 2869461."),
        ]
    )
    make = stream_responses
    bot = agentdur.Agent("t_prov_stream_responses", make(router), [multiply])
    stream = rt.stream_agent(bot, "What is 1231 * 2331?", run_id="r")
    events = list(stream)

    calls = _by_index(events)
    assert calls == {0: ("call_sVidsfFJ6zlzRpelrPkTPlpd", "multiply", '{"a":1231,"b":2331}')}
    assert CALLED == [("multiply", {"a": 1231, "b": 2331})]
    assert rt.steps("r")[1].output == 2869461
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) == "It is 2869461."
    assert stream.result is not None and stream.result.output == "It is 2869461."
    first_llm = rt.steps("r")[0]
    expected = _direct_stream(
        make,
        sse("openai_responses_stream_function_call"),
        RESPONSES_URL,
        [UserMessage(content="What is 1231 * 2331?")],
        bot.tool_definitions(),
    )
    assert recording.response_of(first_llm) == expected
    assert first_llm.model == "gpt-5.5-2026-04-23"
    assert sent(route, 1)["input"][-1] == {
        "type": "function_call_output",
        "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
        "output": "2869461",
    }
    assert rt.replay("r")["output"] == "It is 2869461."
    assert route.call_count == 2


def test_anthropic_tool_call_text_is_the_same_after_the_store(rt: agentdur.Runtime) -> None:
    # The Anthropic adapter writes `raw_arguments` itself from `input`; PostgreSQL's JSONB
    # gives the recorded body back with its keys sorted by length ("unit" first), so the
    # text must not depend on key order for the rebuilt conversation to match the live one.
    router = respx.Router(assert_all_mocked=True)
    first = {
        **body("anthropic_messages_text"),
        "stop_reason": "tool_use",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"location": "Paris", "unit": "celsius"},
            }
        ],
    }
    router.post(MESSAGES_URL).mock(side_effect=[reply(first), reply(anthropic_text("Mild."))])
    model = AnthropicMessages("claude-sonnet-4-0", client=anthropic_client(router))
    result = rt.run_agent(_agent("anthropic_key_order", model, [get_weather]), "Paris?")
    (call,) = result.messages[2].tool_calls  # type: ignore[union-attr]
    assert call.raw_arguments == '{"location": "Paris", "unit": "celsius"}'
