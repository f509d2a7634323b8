"""OpenTelemetry spans of runs and steps, following the GenAI semantic conventions.

The engine and the step kinds call a small interface and nothing else:

- `Tracing.new_run(run_id, workflow)` when a run is created: starts its run span (in the
  caller's context, so it nests under the caller's span) and returns the `metadata` to
  record with the run, `{"otel": {...}}` (no extra write: it goes into `create_run`);
- `Tracing.attach(ctx, metadata)` when an execution's context is made: decides the
  run span of this execution; `traced(ctx, coroutine)` runs the execution inside it;
- `step_span`, `llm_span` / `llm_response`, `tool_span` / `tool_outcome` around a
  step that *executes now* (a step answered from the recording emits nothing).

Tracing is off for a run unless opentelemetry-api is installed and a real tracer
provider is given or set globally; off, `opentelemetry` is never imported, the context
carries no trace, and each helper above is one dict lookup returning a shared no-op.

A resumed execution (recovery, another process, after WAITING) starts its run span as a
child of the first execution's run span, whose context the run recorded as a W3C
`traceparent`: the whole run is one trace however many processes executed it. A
replay emits nothing. A fork starts a trace of its own, linked to its source's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from agentdur.context import RunContext
    from agentdur.models import ModelResponse, ToolResultMessage

T = TypeVar("T")

KEY = "otel"
"""The key of the trace in a run's `metadata` and in `RunContext.values`."""
_OFF: AbstractContextManager[Any] = nullcontext(None)
_api: Any = None
"""The `opentelemetry.trace` module once imported; False when it is not installed."""


def _trace_api() -> Any:
    global _api
    if _api is None:
        if importlib.util.find_spec("opentelemetry") is None:
            _api = False
        else:
            from opentelemetry import trace

            _api = trace
    return _api


@dataclass
class RunTrace:
    """The trace of one execution of a run (kept in `ctx.values["otel"]`)."""

    tracer: Any
    run_id: str
    span: Any = None
    """The run span, when it was started at the run's creation (its first execution)."""
    name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    parent: Any = None
    """The context the run span of a resumed execution starts in."""
    links: list[Any] = field(default_factory=list)


class Tracing:
    """One Runtime's tracing: spans through `provider`, or the global provider."""

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self._tracers: dict[int, Any] = {}
        self._pending: dict[str, Any] = {}
        """Run spans started by `new_run` that no execution has taken yet."""

    def _tracer(self) -> Any:
        """The tracer for a run starting now, or None: tracing is off."""
        trace = _trace_api()
        if not trace:
            return None
        provider = self._provider if self._provider is not None else trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None  # no SDK configured: spans would go nowhere
        tracer = self._tracers.get(id(provider))
        if tracer is None:
            tracer = self._tracers[id(provider)] = provider.get_tracer("agentdur")
        return tracer

    def new_run(self, run_id: str, workflow: str) -> dict[str, Any] | None:
        """Start a new run's span and return the metadata that records its trace."""
        tracer = self._tracer()
        if tracer is None:
            return None
        name, attributes = _run_span(run_id, workflow)
        span = tracer.start_span(name, attributes=attributes)
        self._pending[run_id] = span
        context = span.get_span_context()
        record = {"run_id": run_id, "trace_id": f"{context.trace_id:032x}"}
        record["traceparent"] = _traceparent(context)
        return {KEY: record}

    def discard(self, run_id: str) -> None:
        """Forget a span `new_run` started for a run that was not created after all
        (it existed already): never ended, it is never exported."""
        self._pending.pop(run_id, None)

    def attach(self, ctx: RunContext, metadata: Any) -> None:
        """Give an execution of a run its trace (none for a replay or with tracing off)."""
        span = self._pending.pop(ctx.run_id, None)
        if ctx.replay:
            return
        tracer = self._tracer()
        if tracer is None:
            return
        name, attributes = _run_span(ctx.run_id, ctx.workflow)
        run = RunTrace(tracer, ctx.run_id, span, name, attributes)
        recorded = metadata.get(KEY) if isinstance(metadata, dict) else None
        if span is None and isinstance(recorded, dict):
            parent = _context_of(recorded.get("traceparent"))
            if parent is None:
                pass  # a malformed record: a new trace
            elif recorded.get("run_id") == ctx.run_id:
                trace = _trace_api()
                run.parent = trace.set_span_in_context(trace.NonRecordingSpan(parent))
                attributes["agentdur.resumed"] = True
            else:  # inherited by a fork from its source run: a trace of its own
                run.links.append(_trace_api().Link(parent))
                attributes["agentdur.forked_from"] = str(recorded.get("run_id"))
        ctx.values[KEY] = run


def traced(ctx: RunContext, execution: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """The execution of a run inside its run span (the coroutine itself when off)."""
    run: RunTrace | None = ctx.values.get(KEY)
    if run is None:
        return execution

    async def inside() -> T:
        span = run.span
        if span is None:
            span = run.tracer.start_span(
                run.name, context=run.parent, attributes=run.attributes, links=run.links
            )
        with _current(span, ending=_run_outcome):
            return await execution

    return inside()


def step_span(ctx: RunContext, index: int, name: str, kind: str) -> AbstractContextManager[Any]:
    """The span of a user step (`step {name}`) executing now."""
    run: RunTrace | None = ctx.values.get(KEY)
    if run is None:
        return _OFF
    attributes = _step_attributes(run, index, kind)
    return _current(run.tracer.start_span(f"step {name}", attributes=attributes))


def llm_span(ctx: RunContext, index: int, model: str, provider: str) -> AbstractContextManager[Any]:
    """The span of an LLM step executing now (`chat {model}`, kind CLIENT)."""
    run: RunTrace | None = ctx.values.get(KEY)
    if run is None:
        return _OFF
    attributes = _step_attributes(run, index, "llm")
    attributes["gen_ai.operation.name"] = "chat"
    attributes["gen_ai.request.model"] = model
    attributes["gen_ai.provider.name"] = _PROVIDERS.get(provider, provider)
    kind = _trace_api().SpanKind.CLIENT
    return _current(run.tracer.start_span(f"chat {model}", kind=kind, attributes=attributes))


def llm_response(span: Any, response: ModelResponse) -> None:
    """Add what the model answered to its step's span (nothing when off)."""
    if span is None:
        return
    if response.model:
        span.set_attribute("gen_ai.response.model", response.model)
    span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [response.stop_reason])


def tool_span(ctx: RunContext, index: int, tool: str, call_id: str) -> AbstractContextManager[Any]:
    """The span of a tool step executing now (`execute_tool {tool}`)."""
    run: RunTrace | None = ctx.values.get(KEY)
    if run is None:
        return _OFF
    attributes = _step_attributes(run, index, "tool")
    attributes["gen_ai.operation.name"] = "execute_tool"
    attributes["gen_ai.tool.name"] = tool
    attributes["gen_ai.tool.call.id"] = call_id
    attributes["gen_ai.tool.type"] = "function"
    return _current(run.tracer.start_span(f"execute_tool {tool}", attributes=attributes))


def tool_outcome(span: Any, message: ToolResultMessage) -> ToolResultMessage:
    """Mark a tool step's span failed when the model is told the call failed."""
    if span is not None and message.is_error:
        span.set_attribute("error.type", "tool_error")
        span.set_status(_trace_api().StatusCode.ERROR, message.content[:200])
    return message


# -- internals ---------------------------------------------------------------------------

_PROVIDERS = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "anthropic_messages": "anthropic",
}


def _run_span(run_id: str, workflow: str) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {"agentdur.run_id": run_id, "agentdur.workflow": workflow}
    if workflow.startswith("agent:"):
        agent = workflow[len("agent:") :]
        attributes["gen_ai.operation.name"] = "invoke_agent"
        attributes["gen_ai.agent.name"] = agent
        return f"invoke_agent {agent}", attributes
    return f"workflow {workflow}", attributes


def _step_attributes(run: RunTrace, index: int, kind: str) -> dict[str, Any]:
    return {"agentdur.run_id": run.run_id, "agentdur.step_index": index, "agentdur.step_kind": kind}


def _traceparent(context: Any) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _context_of(traceparent: Any) -> Any:
    """The span context a recorded W3C traceparent names, or None if it is malformed."""
    trace = _trace_api()
    parts = traceparent.split("-") if isinstance(traceparent, str) else []
    try:
        version, trace_id, span_id, flags = parts
        context = trace.SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(flags, 16)),
        )
    except ValueError:
        return None
    return context if version == "00" and context.is_valid else None


def _run_outcome(span: Any, exc: BaseException) -> None:
    """How an execution stopped without finishing the run: released (WAITING,
    NEEDS_ATTENTION, RELEASED) or cancelled with the runtime's loop. No error: the run
    continues elsewhere or later, in the same trace."""
    status = getattr(exc, "status", None)
    if isinstance(status, str):
        span.set_attribute("agentdur.run.status", status)
    else:
        span.set_attribute("agentdur.run.stopped", type(exc).__name__)


@contextmanager
def _current(span: Any, *, ending: Any = None) -> Iterator[Any]:
    """Make `span` current while the block runs, record an exception, end it."""
    trace = _trace_api()
    from opentelemetry import context

    token = context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except Exception as exc:
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200])
        raise
    except BaseException as exc:  # the run stopped here (released, replay end, cancelled)
        if ending is not None:
            ending(span, exc)
        raise
    finally:
        context.detach(token)
        span.end()
