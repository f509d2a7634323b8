"""Neutral message and response types shared by every model adapter.

Adapters translate these to and from each provider's wire shapes; the runtime records
them as JSON (`model_dump(mode="json")`) and rebuilds them with `model_validate`, so
everything here must stay plain data: no clients, no callables, no secrets.

Token counts follow one rule for every provider: `input_tokens` counts *all* input
tokens, and `cache_read_tokens` / `cache_write_tokens` say how many of them were read
from or written to the provider's prompt cache.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

StopReason = Literal["end_turn", "tool_calls", "max_tokens", "refusal", "content_filter", "other"]


class ToolCall(BaseModel):
    """One tool call requested by the model.

    `raw_arguments` keeps the provider's argument text exactly; `arguments` is its
    parsed JSON object, or `{}` when the text is not a JSON object (or holds NaN or
    Infinity, which cannot be recorded). The adapter never raises for bad arguments: the
    agent loop parses `raw_arguments` again and reports the error to the model.
    """

    id: str
    """The provider's id for the call; tool results refer to it."""
    name: str
    arguments: dict[str, Any]
    raw_arguments: str

    @classmethod
    def from_raw(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """Build a call from the provider's argument text, tolerating malformed JSON."""
        try:
            parsed = json.loads(raw_arguments, parse_constant=_reject_constant)
        except ValueError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else {}
        return cls(id=id, name=name, arguments=arguments, raw_arguments=raw_arguments)

    @classmethod
    def from_arguments(cls, id: str, name: str, arguments: dict[str, Any]) -> ToolCall:
        """Build a call from already-parsed arguments (Anthropic, scripted responses).

        The text has sorted keys, so it is the same whether the arguments come from the
        wire or from a JSONB column that reordered them.
        """
        raw = json.dumps(arguments, sort_keys=True)
        return cls(id=id, name=name, arguments=arguments, raw_arguments=raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class Usage(BaseModel):
    """Token counts of one or more model calls."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens (cache counts are already part of the input)."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


class ModelResponse(BaseModel):
    """What one model call returned, in provider-neutral form.

    `raw` is the provider's response body as JSON (None for scripted responses); the
    adapter's `parse_raw(raw)` rebuilds exactly this object from it, which is how a
    recorded response is replayed.
    """

    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stop_reason: StopReason = "end_turn"
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    """The model that answered, as the provider named it (may carry a date suffix)."""
    raw: dict[str, Any] | None = None
    refusal: str | None = None


class SystemMessage(BaseModel):
    """Instructions for the model."""

    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    """A user turn."""

    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    """A model turn: text, tool calls, or both."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    @classmethod
    def from_response(cls, response: ModelResponse) -> AssistantMessage:
        """The history entry for a response, to send back on the next turn."""
        return cls(content=response.text, tool_calls=list(response.tool_calls))


class ToolResultMessage(BaseModel):
    """The result of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage,
    Field(discriminator="role"),
]
"""Any message of a conversation, told apart by `role`."""

messages_adapter: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
"""(De)serialises a conversation: `messages_adapter.dump_python(msgs, mode="json")`."""


class ToolDefinition(BaseModel):
    """A tool as the model sees it: name, description and JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
