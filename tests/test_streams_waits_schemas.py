"""A stream says when an attempt restarts; a long Retry-After releases the run; tools
made from an existing JSON Schema. On both backends (issue 10, items 16, 17 and 27).

The provider traffic goes through the real `openai` SDK and `agentdur.testing`'s respx
bridge, with the recorded SSE bodies of tests/fixtures/providers cut short.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import agentdur
from agentdur.models import ModelResponse, OpenAIChat, ToolCall
from agentdur.retry import RetryPolicy
from agentdur.testing import Scripted, openai_client
from tests.helpers import wait_for

CHAT_URL = "https://api.openai.com/v1/chat/completions"
SSE = "text/event-stream; charset=utf-8"
FIXTURES = Path(os.environ.get("AGENTDUR_FIXTURES") or Path(__file__).parent / "fixtures/providers")


def sse_body(name: str) -> bytes:
    return (FIXTURES / f"{name}.sse").read_bytes()


def sse(content: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": SSE}, content=content)


def chat_text(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "openai_chat_text.json").read_text())
    data["choices"][0]["message"]["content"] = text
    return data


class Clock:
    """Wall time plus an offset that a test moves forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


# -- 16. AttemptRestarted ----------------------------------------------------------------


def test_a_cut_stream_is_followed_by_attempt_restarted(rt: agentdur.Runtime) -> None:
    whole = sse_body("openai_chat_stream_text_usage")
    events = [event for event in whole.split(b"\n\n") if event.strip()]
    end = next(i for i, event in enumerate(events) if b'"finish_reason":"stop"' in event)
    cut = b"".join(event + b"\n\n" for event in events[:end])  # no finish, no [DONE]
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(side_effect=[sse(cut), sse(whole)])
    bot = agentdur.Agent("t_sws_restart", OpenAIChat("gpt-4o-mini", client=openai_client(router)))

    stream = rt.stream_agent(bot, "Say this is a test", run_id="r")
    seen = list(stream)

    assert route.call_count == 2
    kinds = [type(event).__name__ for event in seen]
    restart = kinds.index("AttemptRestarted")
    assert kinds.count("AttemptRestarted") == 1
    assert restart > 0 and set(kinds[:restart]) == {"TextDelta"}
    assert set(kinds[restart + 1 :]) == {"TextDelta"}
    event = seen[restart]
    assert isinstance(event, agentdur.AttemptRestarted)
    assert (event.step_index, event.attempt) == (0, 2)
    assert "ModelHTTPError" in event.reason and "ended early" in event.reason
    first = "".join(e.text for e in seen[:restart] if isinstance(e, agentdur.TextDelta))
    second = "".join(e.text for e in seen[restart + 1 :] if isinstance(e, agentdur.TextDelta))
    assert second.startswith(first)  # the same answer again, from its start
    assert stream.result is not None and stream.result.output == second
    (step,) = rt.steps("r")
    assert (step.kind, step.status, step.attempts) == ("llm", "SUCCEEDED", 2)


def test_policy_reports_the_full_retry_after() -> None:
    policy = RetryPolicy(retries=2, max_delay=60.0)
    error = agentdur.ModelHTTPError(
        "rate limited", status_code=429, retryable=True, retry_after=3600
    )
    assert policy.wait(1, error) == 3600
    assert policy.delay(1, error) == 60  # what a step that cannot release waits
    assert policy.wait(3, error) is None


# -- 17. a long Retry-After releases the run --------------------------------------------


def test_retry_after_an_hour_releases_the_run_and_resumes_the_attempts(
    database_url: str,
) -> None:
    limited = {"error": {"message": "Rate limit reached", "type": "requests"}}
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(
        side_effect=[
            httpx.Response(429, json=limited, headers={"retry-after": "3600"}),
            httpx.Response(200, json=chat_text("fine")),
        ]
    )
    bot = agentdur.Agent("t_sws_wait", OpenAIChat("gpt-4o-mini", client=openai_client(router)))
    clock = Clock()
    runtime = agentdur.Runtime(
        database_url, executor_id=f"t-{uuid.uuid4().hex[:6]}", clock=clock, poll_interval=0.05
    )
    with runtime as rt:
        started = clock()
        handle = rt.start_agent(bot, "hi", run_id="r")
        wait_for(lambda: rt.get_run("r").status == "WAITING", what="the run WAITING")
        run = rt.get_run("r")
        assert run.owner is None
        assert run.lease_until is not None  # the wake-up time
        expected = started + timedelta(seconds=3600)
        assert abs((run.lease_until - expected).total_seconds()) < 5
        wait_for(lambda: not rt._executing(), timeout=5, what="nothing executing")
        (step,) = rt.steps("r")
        assert (step.kind, step.status, step.attempts) == ("llm", "WAITING", 1)
        assert step.error is not None and step.error["type"] == "ModelHTTPError"
        retry_at = datetime.fromisoformat(step.output["retry_at"])
        assert abs((retry_at - run.lease_until).total_seconds()) < 1
        assert route.call_count == 1

        clock.advance(3601)
        assert handle.result(timeout=20)["output"] == "fine"
        assert route.call_count == 2
        (step,) = rt.steps("r")
        assert (step.kind, step.status, step.attempts, step.error) == (
            "llm",
            "SUCCEEDED",
            2,
            None,
        )
        assert rt.get_run("r").status == "SUCCEEDED"


def test_a_long_retry_after_counts_against_the_retries(database_url: str) -> None:
    limited = httpx.Response(
        429, json={"error": {"message": "slow down"}}, headers={"retry-after": "600"}
    )
    router = respx.Router(assert_all_mocked=True)
    route = router.post(CHAT_URL).mock(side_effect=[limited, limited])
    model = OpenAIChat("gpt-4o-mini", client=openai_client(router))
    bot = agentdur.Agent("t_sws_budget", model, model_retries=1)
    clock = Clock()
    runtime = agentdur.Runtime(
        database_url, executor_id=f"t-{uuid.uuid4().hex[:6]}", clock=clock, poll_interval=0.05
    )
    with runtime as rt:
        handle = rt.start_agent(bot, "hi", run_id="r")
        wait_for(lambda: rt.get_run("r").status == "WAITING", what="the run WAITING")
        clock.advance(601)
        with pytest.raises(agentdur.ModelHTTPError, match="HTTP 429"):
            handle.result(timeout=20)
        assert route.call_count == 2  # one retry in all, not one more after resuming
        (step,) = rt.steps("r")
        assert (step.status, step.attempts) == ("ERROR", 2)


# -- 27. tools from a JSON Schema --------------------------------------------------------

# An OpenAI function spec, as a tool set ships it.
REFUND_SPEC: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "refund_order",
        "description": "Refund an order, in full or in part.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "pattern": "^#W[0-9]+$"},
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "reason": {"type": "string", "enum": ["damaged", "late", "other"]},
            },
            "required": ["order_id", "amount"],
            "additionalProperties": False,
        },
    },
}
REFUNDS: list[tuple[Any, ...]] = []


def refund_order(ctx: agentdur.ToolContext, **arguments: Any) -> str:
    REFUNDS.append((ctx.step_index, arguments))
    return f"refunded {arguments['amount']} on {arguments['order_id']}"


def _spec_tool(**options: Any) -> agentdur.Tool:
    spec = REFUND_SPEC["function"]
    return agentdur.tool(
        refund_order,
        name=spec["name"],
        description=spec["description"],
        parameters=spec["parameters"],
        **options,
    )


def _call(call_id: str, raw: str) -> ModelResponse:
    return ModelResponse(
        tool_calls=[ToolCall.from_raw(call_id, "refund_order", raw)], stop_reason="tool_calls"
    )


def test_a_tool_from_an_openai_function_spec_end_to_end(rt: agentdur.Runtime) -> None:
    REFUNDS.clear()
    seen_tools: list[Any] = []

    def script(messages: list[Any], info: Any) -> ModelResponse | str:
        seen_tools.append([t.model_dump() for t in info.tools])
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:  # the amount is not > 0 and the reason not in the enum
            return _call("c1", '{"order_id": "#W100", "amount": 0, "reason": "bored"}')
        if turn == 1:
            return _call("c2", '{"order_id": "#W100", "amount": 12.5, "reason": "late"}')
        return "done"

    refund = _spec_tool(effect="side_effect", key="refund:{order_id}")
    bot = agentdur.Agent("t_sws_schema", Scripted(script), [refund])
    result = rt.run_agent(bot, "refund #W100", run_id="r")

    assert result.output == "done"
    assert seen_tools[0] == [
        {
            "name": "refund_order",
            "description": "Refund an order, in full or in part.",
            "parameters": REFUND_SPEC["function"]["parameters"],
        }
    ]
    assert REFUNDS == [(3, {"order_id": "#W100", "amount": 12.5, "reason": "late"})]
    steps = rt.steps("r")
    assert [(s.kind, s.status) for s in steps] == [
        ("llm", "SUCCEEDED"),
        ("tool", "ERROR"),
        ("llm", "SUCCEEDED"),
        ("tool", "SUCCEEDED"),
        ("llm", "SUCCEEDED"),
    ]
    assert steps[1].error is not None and steps[1].error["type"] == "ToolArgumentsError"
    returned = [m for m in result.messages if m.role == "tool"]
    assert returned[0].is_error
    assert "'amount': 0 is less than or equal to the minimum of 0" in returned[0].content
    assert "'reason': 'bored' is not one of ['damaged', 'late', 'other']" in returned[0].content
    assert returned[1].content == "refunded 12.5 on #W100"
    assert steps[3].input["arguments"] == {"order_id": "#W100", "amount": 12.5, "reason": "late"}


def test_a_schema_tool_rejects_what_its_function_cannot_take() -> None:
    def lookup(order_id: str) -> str:
        return order_id

    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
    tool = agentdur.tool(lookup, parameters=schema, effect="read_only")
    assert tool.parse_arguments('{"order_id": "A1"}') == {"order_id": "A1"}
    with pytest.raises(agentdur.ToolArgumentsError) as caught:
        tool.parse_arguments('{"order_id": "A1", "ordr": 2}')
    assert "unknown argument 'ordr' (valid: 'order_id')" in str(caught.value)
    with pytest.raises(agentdur.ToolArgumentsError) as caught:
        tool.parse_arguments('{"order_id": 7}')
    assert "'order_id': 7 is not of type 'string'" in str(caught.value)


def test_an_invalid_schema_or_mismatched_function_is_a_usage_error() -> None:
    def lookup(order_id: str, limit: int = 5) -> str:
        return order_id

    with pytest.raises(agentdur.UsageError) as caught:
        agentdur.tool(lookup, parameters={"type": "object", "properties": {"x": {"type": 1}}})
    message = str(caught.value)
    assert "parameters is not a valid JSON Schema" in message and "at properties.x.type" in message
    with pytest.raises(agentdur.UsageError) as caught:
        agentdur.tool(
            lookup,
            parameters={
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "page": {"type": "integer"}},
            },
            key="lookup:{missing}",
        )
    message = str(caught.value)
    assert "parameter 'order_id' has no default but is not required by the schema" in message
    assert "the function takes no parameter for schema properties 'page'" in message
    assert "key 'lookup:{missing}' refers to 'missing', which is not a parameter" in message
    with pytest.raises(agentdur.UsageError, match=r'must describe an object \("type": "object"\)'):
        agentdur.tool(lookup, parameters={"type": "string"})
