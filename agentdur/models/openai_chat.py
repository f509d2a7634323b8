"""`OpenAIChat`: the OpenAI Chat Completions API (and OpenAI-compatible servers).

Request building and response parsing are plain functions over dicts; only
`request()` and `stream()` touch the SDK. A streamed answer is accumulated into the
same ChatCompletion-shaped dict a non-streamed call returns, so one `parse_raw` serves
both and a recorded stream replays like a recorded request.
"""

from __future__ import annotations

import contextlib
import json
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
    from openai import AsyncOpenAI

_FINISH_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "max_tokens",
    "content_filter": "content_filter",
}


def openai_client_from_environment(sdk: ModuleType, options: dict[str, Any]) -> Any:
    """`openai.AsyncOpenAI(**options)`, the rest from the environment, or a clear error."""
    try:
        return sdk.AsyncOpenAI(**options)
    except sdk.OpenAIError as exc:
        raise ConfigurationError(
            f"cannot create an OpenAI client: {exc} Or pass api_key=... (and base_url=... for "
            "another server), or client=openai.AsyncOpenAI(...)"
        ) from exc


class OpenAIChat(SDKModel):
    """OpenAI Chat Completions, and any OpenAI-compatible server through `base_url`.

    Args:
        model: model name sent with each request, e.g. "gpt-4.1-mini".
        client: an `openai.AsyncOpenAI`; by default one is built at the first request
            from `base_url`, `api_key`, `default_headers`, `default_query` and
            `http_client` when given, else from the environment (`OPENAI_API_KEY`,
            `OPENAI_BASE_URL`). Its own retries are switched off for every call: the
            runtime retries, so each attempt is visible.
        rate_limit: kept as the `rate_limit` attribute for the runtime's queues.
        request_timeout: seconds one attempt may take (default 120; None keeps the
            client's own); `timeout=` is the same option. A timed-out attempt is retried.
        idle_timeout: seconds a stream may go without data (default 60; None: no limit).
        **params: request fields. Those that change the answer (temperature, top_p,
            max_completion_tokens, stop, seed, response_format, reasoning_effort,
            tool_choice, ..., and `extra_body` for fields of other servers) are recorded
            and hashed; `user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
            `extra_headers` and `extra_query` are sent but never recorded. Anything else
            is a `UsageError`. Keys, headers, timeouts and the base URL are never recorded;
            each LLM step records the endpoint that answered (scheme, host, path).
    """

    provider: ClassVar[str] = "openai_chat"
    sdk_name: ClassVar[str] = "openai"
    api_label: ClassVar[str] = "OpenAI Chat"
    answer_params: ClassVar[frozenset[str]] = frozenset(
        {
            "audio",
            "extra_body",
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "max_completion_tokens",
            "max_tokens",
            "modalities",
            "n",
            "parallel_tool_calls",
            "prediction",
            "presence_penalty",
            "reasoning_effort",
            "response_format",
            "seed",
            "stop",
            "temperature",
            "tool_choice",
            "top_logprobs",
            "top_p",
            "verbosity",
            "web_search_options",
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
        {"model", "messages", "tools", "functions", "function_call", "stream", "stream_options"}
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
        known, extra = split_params(client.chat.completions.create, params)
        arguments: dict[str, Any] = {**known, "model": self.model_name}
        arguments["messages"] = map_messages(messages)
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
            content = await self._post(client.chat.completions, arguments)
        return self.parse_raw(json_body(content))

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AsyncIterator[StreamEvent]:
        """Stream with `include_usage`; complete once `[DONE]` arrives (or, from servers
        that omit it, the finish reason and the usage chunk)."""
        client = self._client_for_call()
        arguments = self._arguments(client, messages, tools, stream=True)
        arguments["stream"] = True
        arguments["stream_options"] = {"include_usage": True}
        accumulator = ChunkAccumulator()
        done = False
        with self._mapped_errors():
            async with contextlib.aclosing(self._sse(client.chat.completions, arguments)) as sse:
                async for event in sse:
                    if done:  # read to the end, so the connection can be reused
                        continue
                    if event.data.startswith("[DONE]"):
                        done = True
                        continue
                    chunk = self._event_json(event)
                    if chunk.get("error"):
                        raise status_error(self.api_label, None, chunk)
                    for item in accumulator.add(chunk):
                        yield item
        if not (done or accumulator.finished()):
            raise self._truncated("[DONE] or a finish reason and usage")
        yield StreamDone(self.parse_raw(accumulator.result()))

    @classmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        choices = as_list(raw.get("choices"))
        choice = as_dict(choices[0]) if choices else {}
        message = as_dict(choice.get("message"))
        tool_calls = [_tool_call(as_dict(item)) for item in as_list(message.get("tool_calls"))]
        function_call = as_dict(message.get("function_call"))
        if function_call:  # the deprecated single-function form
            tool_calls.append(_tool_call({"id": "", "function": function_call}))
        refusal = as_str(message.get("refusal"))
        finish_reason = as_str(choice.get("finish_reason"))
        stop_reason: StopReason
        if refusal:
            stop_reason = "refusal"
        elif finish_reason in _FINISH_REASONS:
            stop_reason = _FINISH_REASONS[finish_reason]
        elif tool_calls:
            stop_reason = "tool_calls"
        elif finish_reason is None and choices:
            stop_reason = "end_turn"
        else:
            stop_reason = "other"
        usage = as_dict(raw.get("usage"))
        return ModelResponse(
            text=as_str(message.get("content")),
            tool_calls=tool_calls,
            stop_reason=stop_reason,
            usage=Usage(
                input_tokens=as_int(usage.get("prompt_tokens")),
                output_tokens=as_int(usage.get("completion_tokens")),
                cache_read_tokens=as_int(
                    as_dict(usage.get("prompt_tokens_details")).get("cached_tokens")
                ),
            ),
            model=as_str(raw.get("model")),
            raw=raw,
            refusal=refusal,
        )


def _tool_call(item: dict[str, Any]) -> ToolCall:
    function = as_dict(item.get("function"))
    call_id = as_str(item.get("id")) or ""
    name = as_str(function.get("name")) or ""
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # some compatible servers send an object
        return ToolCall.from_arguments(call_id, name, arguments)
    return ToolCall.from_raw(call_id, name, as_str(arguments) or "")


def map_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Chat Completions `messages`."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, (SystemMessage, UserMessage)):
            out.append({"role": message.role, "content": message.content})
        elif isinstance(message, AssistantMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": call.raw_arguments or json.dumps(call.arguments),
                        },
                    }
                    for call in message.tool_calls
                ]
            elif message.content is None:
                entry["content"] = ""
            out.append(entry)
        elif isinstance(message, ToolResultMessage):
            out.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
    return out


def map_tools(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions as Chat Completions function tools."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


class ChunkAccumulator:
    """Folds `chat.completion.chunk` dicts into one `chat.completion` dict, emitting events."""

    def __init__(self) -> None:
        self._top: dict[str, Any] = {}
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._order: dict[int, int] = {}
        self._finish_reason: str | None = None
        self._seen_choice = False
        self._usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """Take one chunk; return the events it carries."""
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self._top[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        events: list[StreamEvent] = []
        for choice in as_list(chunk.get("choices")):
            choice = as_dict(choice)
            if choice.get("index", 0) != 0:
                continue
            self._seen_choice = True
            delta = as_dict(choice.get("delta"))
            if text := as_str(delta.get("content")):
                self._text.append(text)
                events.append(TextDelta(text))
            if refusal := as_str(delta.get("refusal")):
                self._refusal.append(refusal)
            for fragment in as_list(delta.get("tool_calls")):
                events.extend(self._add_tool_fragment(as_dict(fragment)))
            if finish_reason := as_str(choice.get("finish_reason")):
                self._finish_reason = finish_reason
        return events

    def _add_tool_fragment(self, fragment: dict[str, Any]) -> list[StreamEvent]:
        index = as_int(fragment.get("index"))
        function = as_dict(fragment.get("function"))
        events: list[StreamEvent] = []
        call = self._calls.get(index)
        if call is None:
            call = {
                "id": as_str(fragment.get("id")) or "",
                "type": "function",
                "function": {"name": as_str(function.get("name")) or "", "arguments": ""},
            }
            self._calls[index] = call
            self._order[index] = len(self._order)
            events.append(ToolCallStarted(self._order[index], call["id"], call["function"]["name"]))
        else:
            call["id"] = call["id"] or as_str(fragment.get("id")) or ""
            name = call["function"]["name"] or as_str(function.get("name")) or ""
            call["function"]["name"] = name
        if arguments := as_str(function.get("arguments")):
            call["function"]["arguments"] += arguments
            events.append(ToolCallDelta(self._order[index], arguments))
        return events

    def finished(self) -> bool:
        """The finish reason and the usage chunk (which comes last) have arrived."""
        return self._finish_reason is not None and self._usage is not None

    def result(self) -> dict[str, Any]:
        """The ChatCompletion-shaped body of everything seen so far."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self._text) if self._text else None,
            "refusal": "".join(self._refusal) if self._refusal else None,
        }
        if self._calls:
            message["tool_calls"] = list(self._calls.values())
        choices = []
        if self._seen_choice:
            choices.append(
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason,
                }
            )
        return {
            "id": self._top.get("id"),
            "object": "chat.completion",
            "created": self._top.get("created"),
            "model": self._top.get("model"),
            "choices": choices,
            "usage": self._usage,
            **{k: v for k, v in self._top.items() if k not in ("id", "created", "model")},
        }
