"""`Scripted`: an offline, deterministic model for demos and tests.

It answers from a list of canned responses, in order, or from a function of the
conversation. Nothing goes over the network and `raw` is None, so recordings made with
it replay through `parse_raw`, which just validates the stored neutral response.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from agentdur.errors import ConfigurationError
from agentdur.models.base import Model
from agentdur.models.types import (
    AssistantMessage,
    Message,
    ModelResponse,
    ToolCall,
    ToolDefinition,
)

ScriptResult = ModelResponse | str
ScriptFunction = Callable[[list[Message], "ScriptInfo"], ScriptResult | Awaitable[ScriptResult]]


@dataclass(frozen=True)
class ScriptInfo:
    """What a script function may look at besides the messages."""

    tools: list[ToolDefinition]
    """The tools offered on this request."""
    call_index: int
    """How many requests this `Scripted` instance answered before this one (0-based)."""


class Scripted(Model):
    """A model that plays a script instead of calling a provider.

    Args:
        responses: the answers in order (a `str` is a final text answer), or a function
            `(messages, info) -> ModelResponse | str` (sync or async) deciding per call.
        model_name: the name recorded for this model.
        delay: seconds to sleep before each answer, to make demos look alive.

    A list is played by turn: the answer for a request is the one at the index equal to
    the number of assistant messages already in the conversation. That survives a
    restart: a run recovered in a fresh process gets the answer for its turn, not the
    first one again. `ScriptInfo.call_index` counts this instance's calls instead.
    """

    provider: ClassVar[str] = "scripted"

    def __init__(
        self,
        responses: Sequence[ModelResponse | str] | ScriptFunction,
        *,
        model_name: str = "scripted",
        delay: float = 0.0,
    ) -> None:
        self.model_name = model_name
        self.params = {}
        self.delay = delay
        self._calls = 0
        self._function: ScriptFunction | None = None
        self._responses: list[ModelResponse] = []
        if callable(responses):
            self._function = responses
        else:
            self._responses = [_as_response(item) for item in responses]

    async def request(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> ModelResponse:
        index = self._calls
        self._calls += 1
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self._function is not None:
            result = self._function(list(messages), ScriptInfo(list(tools), index))
            if inspect.isawaitable(result):
                result = await result
            response = _as_response(result)
        else:
            turn = sum(1 for message in messages if isinstance(message, AssistantMessage))
            if turn >= len(self._responses):
                raise ConfigurationError(
                    f"Scripted model ran out of responses after {len(self._responses)}: "
                    f"it was asked for response {turn + 1}; add more responses to the script"
                )
            response = self._responses[turn].model_copy(deep=True)
        if response.model is None:
            response = response.model_copy(update={"model": self.model_name})
        return response

    @classmethod
    def parse_raw(cls, raw: dict[str, Any]) -> ModelResponse:
        return ModelResponse.model_validate(raw)

    @staticmethod
    def tool_call(
        name: str, arguments: dict[str, Any], id: str | None = None, *, text: str | None = None
    ) -> ModelResponse:
        """A response asking for one tool call: `Scripted.tool_call("refund", {"order": 7})`."""
        call_id = id or _call_id(0, name, arguments)
        return ModelResponse(
            text=text,
            tool_calls=[ToolCall.from_arguments(call_id, name, arguments)],
            stop_reason="tool_calls",
        )

    @staticmethod
    def tool_calls(
        calls: Sequence[tuple[str, dict[str, Any]]], *, text: str | None = None
    ) -> ModelResponse:
        """A response asking for several tool calls at once, in the order given."""
        return ModelResponse(
            text=text,
            tool_calls=[
                ToolCall.from_arguments(_call_id(position, name, arguments), name, arguments)
                for position, (name, arguments) in enumerate(calls)
            ],
            stop_reason="tool_calls",
        )


def _call_id(position: int, name: str, arguments: dict[str, Any]) -> str:
    """A deterministic id, so a script rebuilt in another process gives the same ids."""
    key = json.dumps([position, name, arguments], sort_keys=True, default=str)
    return "call_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _as_response(item: object) -> ModelResponse:
    if isinstance(item, ModelResponse):
        return item
    if isinstance(item, str):
        return ModelResponse(text=item, stop_reason="end_turn")
    raise ConfigurationError(
        f"a Scripted response must be a ModelResponse or a str, got {type(item).__name__}"
    )
