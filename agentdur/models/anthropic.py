"""`AnthropicMessages`: the Anthropic Messages API (`POST /v1/messages`).

System messages are joined into the top-level `system`. Tool results become
`tool_result` blocks of a user message, and consecutive user-side entries (results of
parallel calls, a user text after them) are merged into one user message, as the API
expects. A stream is assembled by the SDK; its final message, dumped to JSON, has the
shape of a non-streamed body, so `parse_raw` serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from agentdur.errors import ConfigurationError
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
        client: an `anthropic.AsyncAnthropic`; by default one is built from the
            environment (`ANTHROPIC_API_KEY`) at the first request, with its own
            retries switched off as for every call.
        max_tokens: the API's required output limit.
        rate_limit: kept as the `rate_limit` attribute for the runtime's queues.
        **params: extra request fields (temperature, stop_sequences, thinking, ...);
            fields the SDK method does not name are sent in the JSON body unchanged.
    """

    provider: ClassVar[str] = "anthropic_messages"
    sdk_name: ClassVar[str] = "anthropic"
    api_label: ClassVar[str] = "Anthropic Messages"

    def __init__(
        self,
        model: str,
        client: AsyncAnthropic | None = None,
        *,
        max_tokens: int = 4096,
        rate_limit: Any = None,
        **params: Any,
    ) -> None:
        super().__init__(model, client, rate_limit=rate_limit, **params)
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        description["params"]["max_tokens"] = self.max_tokens
        return description

    def _default_client(self, sdk: ModuleType) -> Any:
        return sdk.AsyncAnthropic()

    def _map_error(self, exc: BaseException) -> Exception | None:
        if isinstance(exc, TypeError) and "authentication method" in str(exc):
            return ConfigurationError(
                "no Anthropic credentials: set ANTHROPIC_API_KEY or pass "
                "client=anthropic.AsyncAnthropic(...)"
            )
        return super()._map_error(exc)

    def _arguments(
        self,
        method: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
    ) -> dict[str, Any]:
        known, extra = split_params(method, self.params)
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
        arguments = self._arguments(client.messages.create, messages, tools)
        with self._mapped_errors():
            raw_response = await client.messages.with_raw_response.create(**arguments)
            content = await raw_response.http_response.aread()
        return self.parse_raw(json_body(content))

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncIterator[StreamEvent]:
        client = self._client_for_call()
        arguments = self._arguments(client.messages.stream, messages, tools)
        order: dict[int, int] = {}  # content block index -> tool call number
        with self._mapped_errors():
            async with client.messages.stream(**arguments) as events:
                async for event in events:
                    if event.type == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            order[event.index] = len(order)
                            yield ToolCallStarted(order[event.index], block.id, block.name)
                    elif event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            yield TextDelta(delta.text)
                        elif delta.type == "input_json_delta" and event.index in order:
                            yield ToolCallDelta(order[event.index], delta.partial_json)
                final = await events.get_final_message()
        yield StreamDone(self.parse_raw(final.model_dump(mode="json")))

    @classmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in map(as_dict, as_list(raw.get("content"))):
            if block.get("type") == "text":
                texts.append(as_str(block.get("text")) or "")
            elif block.get("type") == "tool_use":
                calls.append(
                    ToolCall.from_arguments(
                        as_str(block.get("id")) or "",
                        as_str(block.get("name")) or "",
                        as_dict(block.get("input")),
                    )
                )
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
