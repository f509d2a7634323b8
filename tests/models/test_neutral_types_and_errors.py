"""Neutral types, the shared error classification and lazy SDK imports."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from agentdur.errors import ConfigurationError, ModelHTTPError
from agentdur.models import (
    AnthropicMessages,
    AssistantMessage,
    Message,
    ModelResponse,
    OpenAIChat,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    messages_adapter,
)
from agentdur.models.base import SDKModel, parse_retry_after, status_error


@pytest.mark.parametrize(
    ("raw", "arguments"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}),
        ('{"city": "Os', {}),
        ('["Oslo"]', {}),
        ("", {}),
        ('{"n": NaN}', {}),
    ],
)
def test_tool_call_keeps_raw_arguments(raw: str, arguments: dict[str, Any]) -> None:
    call = ToolCall.from_raw("call_1", "weather", raw)
    assert (call.arguments, call.raw_arguments) == (arguments, raw)


def test_usage_adds_up() -> None:
    total = Usage(input_tokens=10, output_tokens=2, cache_read_tokens=4) + Usage(
        input_tokens=5, output_tokens=1, cache_write_tokens=3
    )
    assert total == Usage(
        input_tokens=15, output_tokens=3, cache_read_tokens=4, cache_write_tokens=3
    )
    assert total.total_tokens == 18


def test_messages_round_trip_as_json() -> None:
    call = ToolCall.from_raw("c1", "weather", '{"city": "Oslo"}')
    messages: list[Message] = [
        SystemMessage(content="s"),
        UserMessage(content="u"),
        AssistantMessage(content=None, tool_calls=[call]),
        ToolResultMessage(tool_call_id="c1", name="weather", content="cold", is_error=True),
    ]
    data = messages_adapter.dump_python(messages, mode="json")
    assert [m["role"] for m in data] == ["system", "user", "assistant", "tool"]
    assert messages_adapter.validate_python(data) == messages
    assert messages_adapter.validate_json(messages_adapter.dump_json(messages)) == messages


def test_assistant_message_from_response() -> None:
    response = ModelResponse(text="hi", tool_calls=[ToolCall.from_arguments("c", "t", {})])
    assert AssistantMessage.from_response(response) == AssistantMessage(
        content="hi", tool_calls=response.tool_calls
    )


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (529, True),
    ],
)
def test_status_classification(status: int, retryable: bool) -> None:
    body = {"error": {"message": "m", "type": "t"}}
    error = status_error("Test API", status, body)
    assert isinstance(error, ModelHTTPError)
    assert (error.status_code, error.retryable, error.body) == (status, retryable, body)
    assert str(error) == f"Test API returned HTTP {status} (t): m"


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    in_30s = format_datetime(datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after({"retry-after": in_30s}, now=now.timestamp()) == 30.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({}) is None


def test_agentdur_models_import_without_the_sdks() -> None:
    code = (
        "import sys; sys.modules['openai'] = None; sys.modules['anthropic'] = None\n"
        "import agentdur.models as m\n"
        "m.OpenAIChat('gpt-4.1-mini'); m.AnthropicMessages('claude-sonnet-4-5')\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.anyio
@pytest.mark.parametrize(("cls", "sdk"), [(OpenAIChat, "openai"), (AnthropicMessages, "anthropic")])
async def test_missing_sdk_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
    cls: type[SDKModel],
    sdk: str,
) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)
    with pytest.raises(ConfigurationError, match=rf"pip install 'agentdur\[{sdk}\]'"):
        await cls("some-model").request([UserMessage(content="x")], [])
