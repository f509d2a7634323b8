"""Agent and its loop: an ordinary durable workflow on the public step protocol.

The loop is: LLM step, then one tool step per tool call (concurrently when there are
several, with indices in the order the model listed them), the results back to the
model, until a final answer. Every LLM call and every tool call is a recorded step, so a
recovered agent replays what it already has (no second request to the provider, no
second tool execution) and continues live from the first step it does not have.

Agents register by name when constructed, so one defined at import time is found when
its run is recovered in a new process; `rt.register(agent)` is for agents built at run
time. The run's workflow name is `agent:<name>`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic

from agentdur import codec, recording, tracing
from agentdur.context import RunContext, current_run
from agentdur.errors import (
    MaxTurnsExceeded,
    ModelBehaviorError,
    ModelError,
    ToolArgumentsError,
    UsageError,
)
from agentdur.kernel import Action, Attempts, Pause, Requested
from agentdur.model_switch import build_model
from agentdur.models import (
    AssistantMessage,
    Message,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentdur.models.base import Model, StreamDone, events_from_response
from agentdur.options import checked_options
from agentdur.queues import RateLimit, admit, estimate_tokens
from agentdur.retry import RetryPolicy
from agentdur.store import StepInfo, payloads
from agentdur.streaming import AgentEvent, AttemptRestarted
from agentdur.tool_steps import ToolExecution
from agentdur.tools import Tool, tools_by_name
from agentdur.workflow import Workflow, register_workflow

_NAME_RE = re.compile(r"^[\w.-]{1,100}$")

Prompt = str | list[Message]
EventSink = Callable[[AgentEvent], None]


@dataclass
class AgentResult:
    """What an agent run produced."""

    output: Any
    """The final answer: text, or an instance of the agent's `output_type`."""
    run_id: str
    messages: list[Message] = field(default_factory=list)
    """The conversation exactly as the model saw it, rebuilt from the recorded steps."""
    usage: Usage = field(default_factory=Usage)
    """Tokens over every LLM step of the run."""


class Agent:
    """An LLM with tools, run durably.

    Args:
        name: how runs record the agent (`agent:<name>`) and how recovery finds it.
        model: a model adapter (`OpenAIChat`, `OpenAIResponses`, `AnthropicMessages`,
            `Scripted`).
        tools: `@agentdur.tool` objects (plain functions are wrapped with the defaults,
            effect `side_effect`).
        instructions: the system prompt.
        max_turns: LLM calls allowed in one run; past it the run fails with
            `MaxTurnsExceeded`.
        parallel_tool_calls: run several tool calls of one turn concurrently.
        tool_errors: "return" sends a tool's error (bad arguments, unknown tool, an
            exception) back to the model so it can correct itself; "raise" fails the run.
        output_type: a type the final answer must validate into (JSON), with one repair
            turn when it does not.
        model_retries: extra attempts for a retryable provider error (429, 5xx, timeouts),
            with exponential backoff and Retry-After honoured.
    """

    @checked_options()
    def __init__(
        self,
        name: str,
        model: Model,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        instructions: str | None = None,
        *,
        max_turns: int = 20,
        parallel_tool_calls: bool = True,
        tool_errors: Literal["return", "raise"] = "return",
        output_type: Any = None,
        model_retries: int = 4,
        approve: Callable[[ToolCall], bool] | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise UsageError(f"agent name {name!r} must be 1-100 letters, digits, '_', '-' or '.'")
        if tool_errors not in ("return", "raise"):
            raise UsageError(f"tool_errors must be 'return' or 'raise', not {tool_errors!r}")
        if max_turns < 1:
            raise UsageError("max_turns must be at least 1")
        self.name = name
        self.model = model
        self.tools = tools_by_name(tools)
        self.instructions = instructions
        self.max_turns = max_turns
        self.parallel_tool_calls = parallel_tool_calls
        self.tool_errors = tool_errors
        self.output_type = output_type
        self.approve = approve
        self.model_policy = RetryPolicy(
            retries=model_retries, backoff=1.0, max_delay=60.0, retry_on=(ModelError,)
        )
        self._definitions: list[ToolDefinition] | None = None
        self._definitions_json: list[dict[str, Any]] = []
        self._definitions_digest = ""
        self.workflow: Workflow[Any] = Workflow(self._loop_entry, f"agent:{name}")
        # Known to the process by name, so a recovered run finds it; an agent built
        # again under the same name (at run time, in a test) takes its place there.
        register_workflow(self.workflow)

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self.model!r}, tools={list(self.tools)})"

    # -- the workflow ------------------------------------------------------------------

    async def _loop_entry(
        self, prompt: str | list[Message], key_scope: str | None = None
    ) -> dict[str, Any]:
        ctx = current_run(f"agent {self.name!r}")
        return await _Loop(self, ctx, key_scope).run(prompt)

    def tool_definitions(self) -> list[ToolDefinition]:
        """What the model is offered, built once (an agent's tools do not change)."""
        if self._definitions is None:
            self._definitions = [
                ToolDefinition(**tool.definition()) for tool in self.tools.values()
            ]
            self._definitions_json = [d.model_dump() for d in self._definitions]
            self._definitions_digest = recording.digest(self._definitions_json)
        return self._definitions

    def system_prompt(self) -> str | None:
        parts = [self.instructions] if self.instructions else []
        if self.output_type is not None:
            schema = pydantic.TypeAdapter(self.output_type).json_schema()
            parts.append(
                "Give your final answer as a single JSON value (no prose, no code fence) "
                f"matching this JSON Schema: {codec.dumps(schema)}"
            )
        return "\n\n".join(parts) or None


def prompt_messages(prompt: Prompt) -> list[Message]:
    if isinstance(prompt, str):
        return [UserMessage(content=prompt)]
    return list(prompt)


class _Loop:
    """One execution of an agent's loop inside a run (state lives only in memory)."""

    def __init__(self, agent: Agent, ctx: RunContext, key_scope: str | None = None) -> None:
        self.agent = agent
        self.ctx = ctx
        self.key_scope = key_scope
        self.fork: dict[str, Any] = ctx.values.get("fork") or {}
        self.dry_run = bool(self.fork.get("dry_run"))
        self._models: dict[int, Model] = {}
        self.emit: EventSink | None = ctx.values.get("emit")
        self.messages: list[Message] = []
        self.pending: list[Message] = []
        self.tool_steps: dict[int, int] = {}
        """id() of each tool result message in `messages` -> the index of its tool step."""
        self.last_hash: str | None = None
        self.last_tools: Any = None
        self.last_llm: tuple[int, dict[str, Any]] | None = None
        """Index and stored output of the last LLM step, when recorded in this execution:
        its tool steps name its calls rather than repeat them (store/payloads.py)."""
        self.usage = Usage()

    def _add(self, *messages: Message) -> None:
        self.messages.extend(messages)
        self.pending.extend(messages)

    async def run(self, prompt: str | list[Message]) -> dict[str, Any]:
        system = self.agent.system_prompt()
        if system:
            self._add(SystemMessage(content=system))
        self._add(*prompt_messages(prompt))
        repaired = False
        for _turn in range(self.agent.max_turns):
            response = await self._llm_step()
            self._add(AssistantMessage.from_response(response))
            if response.tool_calls:
                results = await self._tool_steps(response.tool_calls)
                self._add(*results)
                continue
            text = _final_text(response)
            if self.agent.output_type is None:
                return {"output": text, "usage": self.usage.model_dump()}
            try:
                value = pydantic.TypeAdapter(self.agent.output_type).validate_json(
                    _strip_fence(text)
                )
            except pydantic.ValidationError as exc:
                if repaired:
                    raise ModelBehaviorError(
                        f"the final answer does not validate into {self.agent.output_type!r} "
                        f"even after a repair turn: {_short(exc)}"
                    ) from None
                repaired = True
                self._add(
                    UserMessage(
                        content="Your answer does not match the required JSON Schema: "
                        f"{_short(exc)}. Answer again with only the JSON value."
                    )
                )
                continue
            output = codec.to_json(value, what=f"the output of agent {self.agent.name!r}")
            return {"output": output, "usage": self.usage.model_dump()}
        raise MaxTurnsExceeded(
            f"agent {self.agent.name!r} used all {self.agent.max_turns} turns without a final "
            "answer; raise max_turns or check the tools' results"
        )

    # -- LLM steps ---------------------------------------------------------------------

    def _model_at(self, index: int) -> Model:
        """The agent's model, or the one a fork switched to from an earlier index."""
        segments = self.fork.get("models", [])
        chosen: int | None = None
        for position, segment in enumerate(segments):
            if segment["from"] <= index:
                chosen = position
        if chosen is None:
            return self.agent.model
        if chosen not in self._models:
            segment = segments[chosen]
            instance = self.ctx.values.get("model_instance")
            if instance is not None and chosen == len(segments) - 1:
                self._models[chosen] = instance  # the fork's own model, in its first run
            else:
                self._models[chosen] = build_model(
                    segment.get("provider"),
                    segment["model"],
                    self.agent.model,
                    params=segment.get("params"),
                    endpoint=segment.get("endpoint"),
                )
        return self._models[chosen]

    async def _llm_step(self) -> ModelResponse:
        ctx = self.ctx
        index = ctx.next_index()
        model = self._model_at(index)
        tools = self.agent.tool_definitions()
        tools_json = self.agent._definitions_json
        changed_tools = tools_json if tools_json is not self.last_tools else None
        describe = model.describe()
        request_hash = recording.chain_hash(
            self.last_hash, describe, self.agent._definitions_digest, self.pending
        )
        pending = list(self.pending)
        after_response = self.last_hash is not None  # pending[0] is the last response
        decision = ctx.look_up(
            Requested(index, model.model_name, "llm", request_hash=request_hash),
            explain=lambda step: recording.request_diff(
                step, ctx.recorded, describe, pending, tools_json, after_response
            ),
        )
        new_messages, self.pending = self.pending, []
        self.last_hash, self.last_tools = request_hash, tools_json
        recorded = decision.recorded
        self.last_llm = None
        if decision.action is Action.REPLAY and recorded is not None:
            if recorded.status == "ERROR":
                raise codec.decode_error(recorded.error or {})
            response = recording.response_of(recorded)
            if self.emit is not None:
                for event in events_from_response(response):
                    if not isinstance(event, StreamDone):
                        self.emit(event)
        else:
            input_data = recording.llm_input(
                describe, new_messages, self.tool_steps, changed_tools, after_response
            )
            resumed = recorded if decision.action is Action.RESUME else None
            with tracing.llm_span(ctx, index, model.model_name, model.provider) as span:
                response = await self._call_model(
                    model, index, tools, request_hash, input_data, resumed
                )
                tracing.llm_response(span, response)
        self.usage = self.usage + response.usage
        return response

    async def _call_model(
        self,
        model: Model,
        index: int,
        tools: list[ToolDefinition],
        request_hash: str,
        input_data: dict[str, Any],
        resumed: StepInfo | None = None,
    ) -> ModelResponse:
        """Attempt the request under the model policy and record the outcome. A long
        wait between attempts (Retry-After) releases the run with the step WAITING;
        `resumed` is that step, whose attempt count the attempts continue from."""
        ctx = self.ctx
        started = ctx.clock()
        info = StepInfo(
            run_id=ctx.run_id,
            step_index=index,
            name=model.model_name,
            kind="llm",
            status="SUCCEEDED",
            model=model.model_name,
            request_hash=request_hash,
            started_at=started,
        )

        async def attempt(number: int) -> tuple[ModelResponse, float, tuple[str, str] | None]:
            admission = await self._admit(model)
            began = time.perf_counter()
            response = await self._request(model, list(self.messages), tools)
            return response, (time.perf_counter() - began) * 1000, admission

        def restarted(number: int, error: Exception) -> None:
            if self.emit is not None:
                reason = f"{type(error).__name__}: {error}"
                self.emit(AttemptRestarted(step_index=index, attempt=number, reason=reason))

        pause = Pause(info, input_data, resumed)
        attempts = Attempts(
            ctx, self.agent.model_policy, index=index, pause=pause, on_retry=restarted
        )
        outcome = await attempts.run(attempt)
        if outcome.error is not None:
            await ctx.arecord(
                _finished(info, ctx, "ERROR", outcome.attempts),
                input_data=input_data,
                error_data=codec.encode_error(outcome.error),
            )
            raise outcome.error
        assert outcome.value is not None
        response, latency_ms, admission = outcome.value
        if admission is not None:
            settle = functools.partial(
                ctx.store.rate_settle, *admission, response.usage.total_tokens
            )
            await ctx.write(settle)
        done = _finished(info, ctx, "SUCCEEDED", outcome.attempts)
        done = _with(
            done, model=response.model or model.model_name, usage=response.usage.model_dump()
        )
        output = recording.llm_output(response, latency_ms, model.endpoint())
        await ctx.arecord(done, input_data=input_data, output_data=output)
        self.last_llm = (index, output.stored)
        return response

    async def _admit(self, model: Model) -> tuple[str, str] | None:
        """Wait for the model's rate limiter (shared by every process on the database)."""
        limit: RateLimit | None = getattr(model, "rate_limit", None)
        if limit is None:
            return None
        limiter = f"model:{model.provider}:{model.model_name}"
        estimate = estimate_tokens(self.messages) if limit.tokens else 0
        event = await admit(self.ctx.store, limiter, limit, clock=self.ctx.clock, tokens=estimate)
        return (limiter, event) if limit.tokens else None

    async def _request(
        self, model: Model, messages: list[Message], tools: list[ToolDefinition]
    ) -> ModelResponse:
        if self.emit is None:
            return await model.request(messages, tools)
        final: ModelResponse | None = None
        async for event in model.stream(messages, tools):
            if isinstance(event, StreamDone):
                final = event.response
            else:
                self.emit(event)
        if final is None:
            raise ModelBehaviorError("the model's stream ended without a final response")
        return final

    # -- tool steps --------------------------------------------------------------------

    async def _tool_steps(self, calls: list[ToolCall]) -> list[ToolResultMessage]:
        if self.agent.parallel_tool_calls and len(calls) > 1:
            # Each _tool_step call takes its index now, in the order the model gave. Every
            # call finishes (and is recorded) before an error fails the run.
            outcomes = await asyncio.gather(
                *[self._tool_step(call, i) for i, call in enumerate(calls)],
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return [o for o in outcomes if isinstance(o, ToolResultMessage)]
        return [await self._tool_step(call, i) for i, call in enumerate(calls)]

    def _tool_step(self, call: ToolCall, position: int) -> Awaitable[ToolResultMessage]:
        index = self.ctx.next_index()
        return self._indexed(index, self._run_tool(index, call, position))

    async def _indexed(
        self, index: int, running: Awaitable[ToolResultMessage]
    ) -> ToolResultMessage:
        message = await running  # keyed by identity: call ids may repeat or be empty
        self.tool_steps[id(message)] = index
        return message

    async def _run_tool(self, index: int, call: ToolCall, position: int) -> ToolResultMessage:
        ctx = self.ctx
        name = call.name[:200]
        decision = ctx.look_up(Requested(index, name, "tool"))
        recorded = decision.recorded
        if decision.action is Action.REPLAY and recorded is not None:
            not_applied = (recorded.error or {}).get("type") == "NotApplied"
            if recorded.status == "ERROR" and self.agent.tool_errors == "raise" and not not_applied:
                raise _tool_error(recorded.error or {})
            return recording.tool_message(recorded, call.id)
        with tracing.tool_span(ctx, index, name, call.id) as span:
            live = await self._live_tool(index, call, name, recorded, position)
            return tracing.tool_outcome(span, live)

    async def _live_tool(
        self, index: int, call: ToolCall, name: str, recorded: StepInfo | None, position: int
    ) -> ToolResultMessage:
        """Execute (or continue) a tool step the recording does not answer."""
        ctx = self.ctx
        info = StepInfo(
            run_id=ctx.run_id,
            step_index=index,
            name=name,
            kind="tool",
            status="SUCCEEDED",
            idempotency_key=f"{ctx.run_id}:{index}",
            started_at=ctx.clock(),
        )
        tool = self.agent.tools.get(call.name)
        if tool is None:
            available = ", ".join(sorted(self.agent.tools)) or "none"
            error = {
                "type": "UnknownTool",
                "message": f"unknown tool {name!r}; available tools: {available}",
            }
            unknown = {"call_id": call.id, "arguments": call.arguments}
            unknown_input = recording.tool_input(self.last_llm, position, unknown)
            return await self._tool_failed(info, 1, unknown_input, error, _tool_error(error))
        try:
            arguments = tool.parse_arguments(call.raw_arguments)
        except ToolArgumentsError as exc:
            raw = {"call_id": call.id, "raw_arguments": call.raw_arguments}
            raw_input = recording.tool_input(self.last_llm, position, raw)
            return await self._tool_failed(info, 1, raw_input, codec.encode_error(exc), exc)
        full = {"call_id": call.id, "arguments": arguments, "effect": tool.effect}
        input_data = recording.tool_input(self.last_llm, position, full)
        needs_approval = tool.requires_approval or (
            self.agent.approve is not None
            and bool(self.agent.approve(call.model_copy(update={"arguments": arguments})))
        )
        execution = ToolExecution(
            ctx,
            info,
            tool,
            arguments,
            input_data,
            recorded,
            dry_run=self.dry_run,
            needs_approval=needs_approval,
            key_scope=self.key_scope,
        )
        step, failure = await execution.run()
        if failure is not None and self.agent.tool_errors == "raise":
            raise failure
        return recording.tool_message(step, call.id)

    async def _tool_failed(
        self,
        info: StepInfo,
        attempts: int,
        input_data: Any,
        error: dict[str, Any],
        exc: BaseException,
    ) -> ToolResultMessage:
        step = await self.ctx.arecord(
            _finished(info, self.ctx, "ERROR", attempts), input_data=input_data, error_data=error
        )
        if self.agent.tool_errors == "raise":
            raise exc
        return recording.tool_message(step, (payloads.full(input_data) or {}).get("call_id", ""))


def _tool_error(error: dict[str, Any]) -> BaseException:
    """The exception a failed tool step raises with tool_errors="raise"."""
    if error.get("type") == "UnknownTool":  # the model named a tool the agent lacks
        return ModelBehaviorError(str(error.get("message", "")))
    return codec.decode_error(error)


def _finished(info: StepInfo, ctx: RunContext, status: str, attempts: int) -> StepInfo:
    return _with(info, status=status, attempts=attempts, finished_at=ctx.clock())


def _with(info: StepInfo, **changes: Any) -> StepInfo:
    from dataclasses import replace

    return replace(info, **changes)


def _final_text(response: ModelResponse) -> str:
    """The final answer, or a clear error for a response that cannot be one."""
    if response.stop_reason == "refusal" or response.refusal:
        raise ModelBehaviorError(f"the model refused: {response.refusal or response.text or ''}")
    if response.stop_reason == "max_tokens":
        raise ModelBehaviorError(
            "the model's answer was cut off by its token limit (stop reason max_tokens); "
            "raise max_tokens on the model"
        )
    if response.stop_reason == "content_filter":
        raise ModelBehaviorError("the provider's content filter stopped the answer")
    if not response.text or not response.text.strip():
        raise ModelBehaviorError("the model returned an empty answer: no text and no tool calls")
    return response.text


def _strip_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text


def _short(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
        for err in exc.errors()[:5]
    )
