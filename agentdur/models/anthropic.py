"""`AnthropicMessages`: the Anthropic Messages API (`POST /v1/messages`).

System messages are joined into the top-level `system`. Tool results become
`tool_result` blocks of a user message, and consecutive user-side entries (results of
parallel calls, a user text after them) are merged into one user message, as the API
expects. A stream's events are folded into the shape of a non-streamed body
(`MessageAccumulator`), so `parse_raw` serves both.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from agentdur.errors import ConfigurationError, ModelHTTPError
from agentdur.models.base import (
    SDKModel,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    as_dict,
    as_int,
    as_list,
    as_str,
    json_body,
    split_params,
    status_error,
)
from agentdur.models.types import (
    AssistantMessage,
    Message,
    ModelResponse,
    StopReason,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_calls",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "refusal": "refusal",
}


class AnthropicMessages(SDKModel):
    """Anthropic Messages API.

    Args:
        model: model name, e.g. "claude-sonnet-4-5".
        client: an `anthropic.AsyncAnthropic`; by default one is built at the first
            request from `base_url`, `api_key`, `default_headers`, `default_query` and
            `http_client` when given, else from the environment (`ANTHROPIC_API_KEY`),
            with its own retries switched off as for every call.
        max_tokens: the API's required output limit.
        rate_limit: kept as the `rate_limit` attribute for the runtime's queues.
        request_timeout, idle_timeout: as for `OpenAIChat` (120 s per attempt, 60 s
            without stream data), never recorded.
        **params: request fields. Recorded and hashed: temperature, top_p, top_k,
            stop_sequences, tool_choice, thinking, output_config, container and
            `extra_body`; sent but never recorded: metadata, service_tier,
            inference_geo, cache_control, extra_headers, extra_query. Anything else is a
            `UsageError`.
    """

    provider: ClassVar[str] = "anthropic_messages"
    sdk_name: ClassVar[str] = "anthropic"
    api_label: ClassVar[str] = "Anthropic Messages"
    answer_params: ClassVar[frozenset[str]] = frozenset(
        {
            "container",
            "extra_body",
            "output_config",
            "stop_sequences",
            "temperature",
            "thinking",
            "tool_choice",
            "top_k",
            "top_p",
        }
    )
    request_params: ClassVar[frozenset[str]] = frozenset(
        {"cache_control", "inference_geo", "metadata", "service_tier"}
    )
    reserved_params: ClassVar[frozenset[str]] = frozenset(
        {"model", "messages", "system", "tools", "stream"}
    )

    def __init__(
        self,
        model: str,
        client: AsyncAnthropic | None = None,
        *,
        max_tokens: int = 4096,
        rate_limit: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(model, client, rate_limit=rate_limit, **options)
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        description["params"]["max_tokens"] = self.max_tokens
        return description

    def with_settings(self, model_name: str, params: dict[str, Any]) -> AnthropicMessages:
        settings = dict(params)
        max_tokens = settings.pop("max_tokens", self.max_tokens)
        clone = super().with_settings(model_name, settings)
        clone.max_tokens = max_tokens
        return clone

    def _default_client(self, sdk: ModuleType) -> Any:
        return sdk.AsyncAnthropic(**self._client_options)

    def _map_error(self, exc: BaseException) -> Exception | None:
        if isinstance(exc, TypeError) and "authentication method" in str(exc):
            return ConfigurationError(
                "no Anthropic credentials: set ANTHROPIC_API_KEY or pass api_key=... "
                "(or client=anthropic.AsyncAnthropic(...))"
            )
        return super()._map_error(exc)

    def _arguments(
        self,
        client: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        *,
        stream: bool,
    ) -> dict[str, Any]:
        params = self._request_arguments(client, stream=stream)
        known, extra = split_params(client.messages.create, params)
        system, mapped = map_messages(messages)
        arguments: dict[str, Any] = {
            **known,
            "model": self.model_name,
            "max_tokens": self.max_tokens,
            "messages": mapped,
        }
        if system is not None:
            arguments["system"] = system
        if tools:
            arguments["tools"] = map_tools(tools)
        if extra:
            arguments["extra_body"] = extra
        return arguments

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> ModelResponse:
        client = self._client_for_call()
        arguments = self._arguments(client, messages, tools, stream=False)
        with self._mapped_errors():
            content = await self._post(client.messages, arguments)
        return self.parse_raw(json_body(content))

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncIterator[StreamEvent]:
        """Stream events; complete once `message_stop` arrives."""
        client = self._client_for_call()
        arguments = self._arguments(client, messages, tools, stream=True)
        arguments["stream"] = True
        accumulator = MessageAccumulator()
        with self._mapped_errors():
            async with contextlib.aclosing(self._sse(client.messages, arguments)) as sse:
                async for message in sse:
                    if accumulator.stopped or message.event == "ping":
                        continue
                    event = self._event_json(message)
                    if message.event == "error" or event.get("type") == "error":
                        raise status_error(self.api_label, None, event)
                    if accumulator.message is None and event.get("type") != "message_start":
                        raise ModelHTTPError(
                            f"{self.api_label} stream began with {event.get('type')!r}, "
                            "not message_start",
                            status_code=None,
                            retryable=True,
                        )
                    for item in accumulator.add(event):
                        yield item
        if not accumulator.stopped:
            raise self._truncated("message_stop")
        yield StreamDone(self.parse_raw(accumulator.result()))

    @classmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in map(as_dict, as_list(raw.get("content"))):
            if block.get("type") == "text":
                texts.append(as_str(block.get("text")) or "")
            elif block.get("type") == "tool_use":
                call_id, name = as_str(block.get("id")) or "", as_str(block.get("name")) or ""
                partial = block.get("partial_json")
                if isinstance(partial, str):  # streamed input JSON that did not parse
                    calls.append(ToolCall.from_raw(call_id, name, partial))
                else:
                    arguments = as_dict(block.get("input"))
                    calls.append(ToolCall.from_arguments(call_id, name, arguments))
        text = "".join(texts) if texts else None
        reason = as_str(raw.get("stop_reason"))
        stop_reason = _STOP_REASONS.get(reason or "", "tool_calls" if calls else "other")
        usage = as_dict(raw.get("usage"))
        cache_read = as_int(usage.get("cache_read_input_tokens"))
        cache_write = as_int(usage.get("cache_creation_input_tokens"))
        return ModelResponse(
            text=text,
            tool_calls=calls,
            stop_reason=stop_reason,
            usage=Usage(
                input_tokens=as_int(usage.get("input_tokens")) + cache_read + cache_write,
                output_tokens=as_int(usage.get("output_tokens")),
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
            ),
            model=as_str(raw.get("model")),
            raw=raw,
            refusal=text if stop_reason == "refusal" else None,
        )


def map_messages(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages as (`system`, `messages`), merging consecutive same-role turns."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
        elif isinstance(message, UserMessage):
            append("user", [{"type": "text", "text": message.content}])
        elif isinstance(message, AssistantMessage):
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            for call in message.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                )
            if blocks:  # the API rejects an empty assistant turn
                append("assistant", blocks)
        elif isinstance(message, ToolResultMessage):
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
            }
            if message.is_error:
                result["is_error"] = True
            append("user", [result])
    for entry in out:  # a lone text block reads better as a plain string
        content = entry["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            entry["content"] = content[0]["text"]
    return ("\n\n".join(system) if system else None), out


def map_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions as Anthropic client tools."""
    return [
        {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
        for tool in tools
    ]


class MessageAccumulator:
    """Folds Messages stream events into the body a non-streamed call returns.

    A tool's input is the JSON its `input_json_delta` fragments spell. When they do not
    spell a JSON object (the stream was cut inside it, by `max_tokens` for example), the
    block keeps `input: {}` and the text the server sent as `partial_json`, so the model
    is told its arguments were malformed JSON rather than missing properties (the SDK's
    own accumulator turns such text into `{}`).
    """

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.stopped = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, str] = {}
        self._order: dict[int, int] = {}  # content block index -> tool call number

    def add(self, event: dict[str, Any]) -> list[StreamEvent]:
        """Take one event; return the stream events it carries."""
        kind = event.get("type")
        index = as_int(event.get("index"))
        events: list[StreamEvent] = []
        if kind == "message_start":
            self.message = dict(as_dict(event.get("message")))
            self.message["usage"] = dict(as_dict(self.message.get("usage")))
        elif kind == "content_block_start":
            block = dict(as_dict(event.get("content_block")))
            self._blocks[index] = block
            if block.get("type") == "tool_use":
                self._order[index] = len(self._order)
                events.append(
                    ToolCallStarted(
                        self._order[index],
                        as_str(block.get("id")) or "",
                        as_str(block.get("name")) or "",
                    )
                )
        elif kind == "content_block_delta":
            events.extend(self._delta(index, as_dict(event.get("delta"))))
        elif kind == "content_block_stop":
            self._finish_input(index)
        elif kind == "message_delta" and self.message is not None:
            self.message.update(as_dict(event.get("delta")))
            usage = as_dict(event.get("usage"))
            self.message["usage"].update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        block = self._blocks.get(index)
        if block is None:
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = as_str(delta.get("text")) or ""
            block["text"] = (as_str(block.get("text")) or "") + text
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            fragment = as_str(delta.get("partial_json")) or ""
            self._json[index] = self._json.get(index, "") + fragment
            if index in self._order and fragment:
                return [ToolCallDelta(self._order[index], fragment)]
        elif kind == "thinking_delta":
            block["thinking"] = (as_str(block.get("thinking")) or "") + (
                as_str(delta.get("thinking")) or ""
            )
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block["citations"] = [*as_list(block.get("citations")), delta.get("citation")]
        return []

    def _finish_input(self, index: int) -> None:
        text = self._json.pop(index, None)
        block = self._blocks.get(index)
        if block is None or not text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            block["input"] = value
        else:
            block["input"] = {}
            block["partial_json"] = text

    def result(self) -> dict[str, Any]:
        """The Message-shaped body of everything seen so far."""
        for index in list(self._json):
            self._finish_input(index)
        message = dict(self.message or {})
        message["content"] = [self._blocks[i] for i in sorted(self._blocks)]
        return message
