"""How LLM and tool steps are recorded, and how a conversation is rebuilt from them.

I/O-free: the agent loop and the audit/CLI both use these functions, so what is written
and what is read back agree by construction.

Each payload is stored once:
- an LLM step's input holds only the messages new since the previous LLM step, and a
  tool result among them is a reference `{"role": "tool", "step": k}` to tool step k
  (its output is the content); the assistant message that opens a turn is the previous
  LLM step's response, so it is not stored again (assistant messages of the prompt are);
- an LLM step's output is the provider's raw body (`{"raw": ...}`), from which the
  neutral response is parsed on read, or the neutral response itself for models without
  a raw body (`{"response": ...}`), its tool calls without the parsed `arguments` when
  they are just `raw_arguments` parsed again, and without the usage and model the
  step's own columns hold;
- tool definitions are stored on the first LLM step and again only when they change;
- a tool call's id and argument text are kept once, in the LLM step's `calls` (moved
  out of the raw body, put back on read: store/payloads.py); a tool step's input names
  that call (`{"llm": L, "call": i}`) and keeps the validated arguments only when they
  differ; its output is the tool's result. Strings over 64 KiB are kept once, by hash.

The request hash of LLM step n is a chain: sha256(hash of step n-1, model, parameters,
tools, every message new since step n-1 in full, tool-call argument text with sorted
keys). It therefore covers the whole request while costing only the new messages to
compute, and does not depend on the key order the store gives JSON back in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from agentdur import codec
from agentdur.models import (
    AnthropicMessages,
    AssistantMessage,
    Message,
    ModelResponse,
    OpenAIChat,
    OpenAIResponses,
    Scripted,
    ToolCall,
    ToolResultMessage,
    messages_adapter,
)
from agentdur.models.base import Model
from agentdur.store import StepInfo, payloads
from agentdur.store.payloads import Packed

PARSERS: dict[str, type[Model]] = {
    cls.provider: cls for cls in (OpenAIChat, OpenAIResponses, AnthropicMessages, Scripted)
}


def digest(data: Any) -> str:
    """sha256 of canonical JSON."""
    return hashlib.sha256(codec.dumps_sorted(data).encode()).hexdigest()


def chain_hash(
    previous: str | None, model: dict[str, Any], tools: str, new_messages: Sequence[Message]
) -> str:
    """The request hash of an LLM step (see the module docstring); `tools` is the digest
    of the tool definitions, computed once per agent."""
    messages = messages_adapter.dump_python(list(new_messages), mode="json")
    for message in messages:
        for call in message.get("tool_calls") or []:
            call["raw_arguments"] = _canonical(call["raw_arguments"])
    payload = {"previous": previous, "model": model, "tools": tools, "messages": messages}
    return digest(payload)


def _canonical(raw: str) -> str:
    """Argument text with sorted keys. Adapters that get an object (Anthropic) write the
    text themselves, in the key order of the body, which JSONB does not keep."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return codec.dumps_sorted(value) if isinstance(value, dict) else raw


def _without_response(new_messages: Sequence[Message], after_response: bool) -> Sequence[Message]:
    """The new messages less the previous LLM step's response, which opens them."""
    if after_response and new_messages and isinstance(new_messages[0], AssistantMessage):
        return new_messages[1:]
    return new_messages


def llm_input(
    model: dict[str, Any],
    new_messages: Sequence[Message],
    tool_steps: dict[int, int],
    tools: Any,
    after_response: bool,
) -> dict[str, Any]:
    """An LLM step's recorded input; tool results become references to their steps.

    `tool_steps` maps `id()` of a tool result message to its tool step; `after_response`
    says the messages start with the previous LLM step's response (every step but the
    first).
    """
    recorded: list[Any] = []
    for message in _without_response(new_messages, after_response):
        if isinstance(message, ToolResultMessage) and id(message) in tool_steps:
            recorded.append({"role": "tool", "step": tool_steps[id(message)]})
        else:
            recorded.append(message.model_dump(mode="json"))
    data: dict[str, Any] = {
        "provider": model["provider"],
        "params": model["params"],
        "messages": recorded,
    }
    if tools is not None:
        data["tools"] = tools
    return data


def llm_output(response: ModelResponse, latency_ms: float, endpoint: str | None = None) -> Packed:
    """An LLM step's recorded output: the raw body when there is one, else the response;
    with the endpoint that answered (scheme, host, path, from `Model.endpoint()`). Its
    stored form keeps each tool call's id and arguments in `calls` (payloads.py)."""
    extra: dict[str, Any] = {"latency_ms": round(latency_ms, 1)}
    if endpoint is not None:
        extra["endpoint"] = endpoint
    if response.raw is not None:
        return _packed({"raw": response.raw, **extra}, "raw", response)
    neutral = response.model_dump(mode="json", exclude={"raw"})
    for call in neutral["tool_calls"]:
        reparsed = ToolCall.from_raw(call["id"], call["name"], call["raw_arguments"])
        if codec.dumps_sorted(reparsed.arguments) == codec.dumps_sorted(call["arguments"]):
            del call["arguments"]  # stored once, as the text the model sent
    # Usage and model are the step's own columns (the agent writes them from this
    # response): the stored response leaves them out and `payloads.expand` puts them back.
    kept = {k: v for k, v in neutral.items() if k != "usage" and (k != "model" or v is None)}
    return _packed(
        {"response": neutral, **extra}, "response", response, {"response": kept, **extra}
    )


def _packed(
    output: dict[str, Any],
    key: str,
    response: ModelResponse,
    stored_output: dict[str, Any] | None = None,
) -> Packed:
    stored_output = output if stored_output is None else stored_output
    if not response.tool_calls:
        return Packed(output, stored_output)
    calls = [(c.id, c.raw_arguments, c.arguments) for c in response.tool_calls]
    return Packed(output, payloads.pack_calls(stored_output, key, calls))


def tool_input(llm: tuple[int, dict[str, Any]] | None, position: int, data: dict[str, Any]) -> Any:
    """A tool step's input to record: naming call `position` of the LLM step `llm` (its
    index and stored output) when that step was recorded in this execution, else `data`."""
    if llm is None or position >= len(llm[1].get("calls", ())):
        return data
    return Packed(data, payloads.tool_input(llm[0], position, llm[1], data))


def response_of(step: StepInfo) -> ModelResponse:
    """The neutral response of a recorded LLM step."""
    output = step.output or {}
    if "response" in output:
        neutral = dict(output["response"])
        neutral["tool_calls"] = [
            call if "arguments" in call else ToolCall.from_raw(**call).model_dump(mode="json")
            for call in neutral.get("tool_calls") or []
        ]
        return ModelResponse.model_validate(neutral)
    provider = (step.input or {}).get("provider", "")
    parser = PARSERS.get(provider)
    if parser is None:
        raise ValueError(f"step {step.step_index}: unknown provider {provider!r}")
    return parser.parse_raw(output["raw"])


def tool_content(step: StepInfo) -> tuple[str, bool]:
    """What the model is told about a tool step: (content, is_error)."""
    if step.status == "ERROR":
        error = step.error or {}
        kind = error.get("type", "Error")
        if kind == "NotApplied":  # the tool's own words, exactly
            return str(error.get("message", "")), True
        prefix = "" if kind in {"ToolArgumentsError", "UnknownTool"} else f"{kind}: "
        return f"Error: {prefix}{error.get('message', '')}", True
    output = step.output
    if isinstance(output, dict) and output.get("simulated"):
        return str(output.get("message", "")), False
    # Sorted keys: PostgreSQL's JSONB does not keep key order, and the model must be told
    # the same text live, on recovery and in the rebuilt conversation.
    return (output if isinstance(output, str) else codec.dumps_sorted(output)), False


def tool_message(step: StepInfo, call_id: str) -> ToolResultMessage:
    content, is_error = tool_content(step)
    return ToolResultMessage(
        tool_call_id=call_id, name=step.name, content=content, is_error=is_error
    )


def conversation(steps: Sequence[StepInfo]) -> list[Message]:
    """The messages exactly as the model saw them, rebuilt from a run's steps."""
    by_index = {step.step_index: step for step in steps}
    messages: list[Message] = []
    pending: AssistantMessage | None = None
    for step in steps:
        if step.kind != "llm":
            continue
        if pending is not None:
            messages.append(pending)
        for item in (step.input or {}).get("messages", []):
            if item.get("role") == "tool" and "step" in item:
                tool_step = by_index[item["step"]]
                messages.append(tool_message(tool_step, (tool_step.input or {}).get("call_id", "")))
            else:
                messages.append(messages_adapter.validate_python([item])[0])
        if step.status == "SUCCEEDED":
            pending = AssistantMessage.from_response(response_of(step))
        else:
            pending = None
    if pending is not None:
        messages.append(pending)
    return messages


def request_diff(
    recorded: StepInfo,
    recorded_steps: dict[int, StepInfo],
    model: dict[str, Any],
    new_messages: Sequence[Message],
    tools: Any,
    after_response: bool = True,
) -> str:
    """A short account of how a request differs from the recorded one at that step."""
    data = recorded.input or {}
    if data.get("provider") != model["provider"]:
        return f"provider {model['provider']!r} instead of {data.get('provider')!r}"
    old_params, new_params = data.get("params") or {}, model["params"]
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            return f"parameter {key!r} = {new_params.get(key)!r} (recorded {old_params.get(key)!r})"
    if "tools" in data and data["tools"] != tools:
        return "other tool definitions (" + ", ".join(t["name"] for t in tools) + ")"
    old = [_resolve(item, recorded_steps) for item in data.get("messages", [])]
    new = [m.model_dump(mode="json") for m in _without_response(new_messages, after_response)]
    for position, (before, after) in enumerate(zip(old, new, strict=False)):
        if before != after:
            return f"new message {position} ({after.get('role')}) changed " + difference(
                *_compared(before, after)
            )
    if len(old) != len(new):
        return f"{len(new)} new messages instead of {len(old)}"
    return "the same new messages after a different history (an earlier step changed)"


def _resolve(item: dict[str, Any], steps: dict[int, StepInfo]) -> dict[str, Any]:
    if item.get("role") == "tool" and "step" in item and item["step"] in steps:
        step = steps[item["step"]]
        return tool_message(step, (step.input or {}).get("call_id", "")).model_dump(mode="json")
    return item


def _compared(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, str]:
    """The texts to compare of two messages: their content, or all of them as JSON."""
    old, new = str(before.get("content") or ""), str(after.get("content") or "")
    if old != new:
        return old, new
    return codec.dumps_sorted(before), codec.dumps_sorted(after)


def difference(recorded: str, now: str, width: int = 40) -> str:
    """Where two texts differ: the same window of both around the first character
    that differs, with its offset (texts that share a long prefix are told apart)."""
    if recorded == now:
        return "(no visible difference)"
    at = next(
        (i for i, (a, b) in enumerate(zip(recorded, now, strict=False)) if a != b),
        min(len(recorded), len(now)),
    )
    start = max(0, at - width)

    def window(text: str) -> str:
        end = at + width
        return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")

    return f"at character {at}: {window(now)!r} (recorded {window(recorded)!r})"
