"""`OpenAIResponses`: the OpenAI Responses API (`POST /v1/responses`).

Leading system messages become `instructions`; a system message later in the
conversation stays in place as an input item with role "system". Assistant tool calls
and tool results travel as `function_call` / `function_call_output` items, without the
provider's item ids, so history replays with `store=false` and without reasoning items.
A stream's final `response.completed` (or `.incomplete` / `.failed`) event carries the
same body a non-streamed call returns, which is what `raw` keeps.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

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
from agentdur.models.openai_chat import openai_client_from_environment
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
    from openai import AsyncOpenAI

_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
_INCOMPLETE_REASONS: dict[str, StopReason] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "content_filter",
}


class OpenAIResponses(SDKModel):
    """OpenAI Responses API; client and timeout options as for `OpenAIChat`.

    Function tools are sent with `"strict": false`: the API defaults to strict mode,
    whose schema rules (every property required, no additional properties) schemas
    derived from Python signatures rarely meet. Recorded and hashed: temperature, top_p,
    max_output_tokens, reasoning, text, tool_choice, include, truncation, ... and
    `extra_body`; sent but never recorded: user, metadata, store, service_tier,
    prompt_cache_key, safety_identifier, extra_headers, extra_query.
    """

    provider: ClassVar[str] = "openai_responses"
    sdk_name: ClassVar[str] = "openai"
    api_label: ClassVar[str] = "OpenAI Responses"
    answer_params: ClassVar[frozenset[str]] = frozenset(
        {
            "extra_body",
            "include",
            "max_output_tokens",
            "max_tool_calls",
            "parallel_tool_calls",
            "prompt",
            "reasoning",
            "temperature",
            "text",
            "tool_choice",
            "top_logprobs",
            "top_p",
            "truncation",
        }
    )
    request_params: ClassVar[frozenset[str]] = frozenset(
        {
            "metadata",
            "prompt_cache_key",
            "prompt_cache_options",
            "prompt_cache_retention",
            "safety_identifier",
            "service_tier",
            "store",
            "user",
        }
    )
    reserved_params: ClassVar[frozenset[str]] = frozenset(
        {"model", "input", "instructions", "tools", "stream", "stream_options"}
    )

    def __init__(
        self,
        model: str,
        client: AsyncOpenAI | None = None,
        *,
        rate_limit: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(model, client, rate_limit=rate_limit, **options)

    def _default_client(self, sdk: ModuleType) -> Any:
        return openai_client_from_environment(sdk, self._client_options)

    def _arguments(
        self,
        client: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        *,
        stream: bool,
    ) -> dict[str, Any]:
        params = self._request_arguments(client, stream=stream)
        known, extra = split_params(client.responses.create, params)
        instructions, items = map_messages(messages)
        arguments: dict[str, Any] = {**known, "model": self.model_name, "input": items}
        if instructions is not None:
            arguments["instructions"] = instructions
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
            content = await self._post(client.responses, arguments)
        return self.parse_raw(json_body(content))

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncIterator[StreamEvent]:
        """Stream events; complete once `response.completed` (or `.incomplete`,
        `.failed`) arrives, whose response is the recorded body."""
        client = self._client_for_call()
        arguments = self._arguments(client, messages, tools, stream=True)
        arguments["stream"] = True
        final: dict[str, Any] | None = None
        order: dict[int, int] = {}
        with self._mapped_errors():
            async with contextlib.aclosing(self._sse(client.responses, arguments)) as sse:
                async for message in sse:
                    if final is not None:  # read to the end, so the connection can be reused
                        continue
                    event = self._event_json(message)
                    kind = event.get("type")
                    position = as_int(event.get("output_index"))
                    item = as_dict(event.get("item"))
                    if kind == "response.output_text.delta":
                        yield TextDelta(as_str(event.get("delta")) or "")
                    elif kind == "response.output_item.added" and item.get("type") == (
                        "function_call"
                    ):
                        order[position] = len(order)
                        yield ToolCallStarted(
                            order[position],
                            as_str(item.get("call_id")) or "",
                            as_str(item.get("name")) or "",
                        )
                    elif kind == "response.function_call_arguments.delta" and position in order:
                        yield ToolCallDelta(order[position], as_str(event.get("delta")) or "")
                    elif kind in _FINAL_EVENTS:
                        final = as_dict(event.get("response"))
                    elif kind == "error":
                        raise status_error(self.api_label, None, event)
        if final is None:
            raise self._truncated("response.completed")
        yield StreamDone(self.parse_raw(final))

    @classmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        texts: list[str] = []
        refusals: list[str] = []
        calls: list[ToolCall] = []
        for item in map(as_dict, as_list(raw.get("output"))):
            if item.get("type") == "message":
                for part in map(as_dict, as_list(item.get("content"))):
                    if part.get("type") == "output_text":
                        texts.append(as_str(part.get("text")) or "")
                    elif part.get("type") == "refusal":
                        refusals.append(as_str(part.get("refusal")) or "")
            elif item.get("type") == "function_call":
                calls.append(
                    ToolCall.from_raw(
                        as_str(item.get("call_id")) or as_str(item.get("id")) or "",
                        as_str(item.get("name")) or "",
                        as_str(item.get("arguments")) or "",
                    )
                )
        status = raw.get("status")
        reason = as_dict(raw.get("incomplete_details")).get("reason")
        stop_reason: StopReason
        if refusals:
            stop_reason = "refusal"
        elif status == "incomplete":
            stop_reason = _INCOMPLETE_REASONS.get(str(reason), "other")
        elif status != "completed":
            stop_reason = "other"
        else:
            stop_reason = "tool_calls" if calls else "end_turn"
        usage = as_dict(raw.get("usage"))
        return ModelResponse(
            text="".join(texts) if texts else None,
            tool_calls=calls,
            stop_reason=stop_reason,
            usage=Usage(
                input_tokens=as_int(usage.get("input_tokens")),
                output_tokens=as_int(usage.get("output_tokens")),
                cache_read_tokens=as_int(
                    as_dict(usage.get("input_tokens_details")).get("cached_tokens")
                ),
            ),
            model=as_str(raw.get("model")),
            raw=raw,
            refusal="".join(refusals) if refusals else None,
        )


def map_messages(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Neutral messages as (`instructions`, `input` items)."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            if items:
                items.append({"role": "system", "content": message.content})
            else:
                instructions.append(message.content)
        elif isinstance(message, UserMessage):
            items.append({"role": "user", "content": message.content})
        elif isinstance(message, AssistantMessage):
            if message.content:
                items.append({"role": "assistant", "content": message.content})
            for call in message.tool_calls:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.id,
                        "name": call.name,
                        "arguments": call.raw_arguments or json.dumps(call.arguments),
                    }
                )
        elif isinstance(message, ToolResultMessage):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": message.content,
                }
            )
    return ("\n\n".join(instructions) if instructions else None), items


def map_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions as Responses function tools."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
            "strict": False,
        }
        for tool in tools
    ]
